// The driver's per-thread scratch.
#include <vector>

#include "convbn_internal.h"

namespace xnorm::convbn {
namespace {

// Per-thread scratch that persists between calls: these buffers are as large as the activations, and
// allocating them afresh each call costs page faults and zero-filling. Each grows to the largest size
// this thread has needed; two purposes never share one.
thread_local std::vector<float> tls_workspace[kSlots];

}  // namespace

float* workspace(Slot slot, int64_t size) {
  std::vector<float>& v = tls_workspace[slot];
  if (int64_t(v.size()) < size) v.resize(size_t(size));
  return v.data();
}

}  // namespace xnorm::convbn
