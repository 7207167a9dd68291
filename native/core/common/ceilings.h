// The probes moved to native/core/probes/ceilings.h; this forwarding header goes once native/addon
// includes that one.
#pragma once
#include "../probes/ceilings.h"
