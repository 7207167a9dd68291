// XNORM_DEBUG=1: one line on stderr, "[xnorm] ...", for each choice the library makes (conv algorithm per
// call shape, MST calibration and trial, CUDA plugin probe), so a user can see what ran and why.
#pragma once
#include <string>

namespace xnorm {

// True when XNORM_DEBUG is set to anything but "", "0" or "false"; read once per process.
bool debug_enabled();
// Writes "[xnorm] <message>\n" to stderr in one write (lines of concurrent calls never interleave).
void debug_log(const std::string& message);
// True the first time `key` is seen in this process: a loop of identical calls logs one line.
bool debug_first(const std::string& key);

}  // namespace xnorm
