// Helpers shared by the files of the MST planner (not part of mst.h's interface).
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "../common/error.h"
#include "mst.h"

namespace xnorm::mst {

inline std::string num(int64_t v) { return std::to_string(v); }
[[noreturn]] inline void corrupt(const std::string& m) { fail(ErrorCode::CorruptPlan, "MstPlan: " + m); }

using bconv::WeightShape;

// Little-endian 32-bit fields of a plan's bytes.
inline void put32(uint8_t* p, uint32_t v) {
  for (int b = 0; b < 4; ++b) p[b] = uint8_t(v >> (8 * b));
}
inline uint32_t get32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// Mean seconds per call of fn, over as many calls as fill `window` seconds.
template <typename F>
double best_window(F&& fn, double window) {
  using clock = std::chrono::steady_clock;
  int64_t reps = 0;
  auto t0 = clock::now();
  double dt = 0;
  do {
    fn();
    ++reps;
    dt = std::chrono::duration<double>(clock::now() - t0).count();
  } while (dt < window);
  return dt / double(reps);
}

// The timed trial of an 'auto' plan (trial.cc): true when its edges run clearly faster than the dense
// weights on a synthetic input of this layer's shape.
bool plan_pays(const uint32_t* words, const bconv::WeightShape& s, const std::vector<int32_t>& parent);

// Version 2's weights section (compress.cc): appended to `out`, and read back from exactly [p, end) for a
// checked parent array; the reader fails with CorruptPlan on anything the writer would not have written.
void append_weights(const uint32_t* words, const WeightShape& s, const std::vector<int32_t>& parent,
                    std::vector<uint8_t>& out);
std::vector<uint32_t> read_weights(const uint8_t* p, const uint8_t* end, const WeightShape& s,
                                   const std::vector<int32_t>& parent);

}  // namespace xnorm::mst
