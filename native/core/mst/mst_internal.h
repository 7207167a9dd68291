// Helpers shared by the files of the MST planner (not part of mst.h's interface).
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
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

// Seconds per call of each of fns, called in turns (one sample of each per round) for at least
// min_rounds rounds and until `budget` seconds have passed, at most 200 rounds: neighbouring samples of
// different fns see the same load. Single-threaded (num_threads() == 1), calls are timed in the calling
// thread's CPU time, which other processes' load does not inflate; with more threads in wall time.
// Timings in one process run one at a time.
std::vector<std::vector<double>> timed_rounds(const std::vector<std::function<void()>>& fns, int min_rounds,
                                              double budget);
inline double fastest(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

// The timed trial of an 'auto' plan (trial.cc; `plan` and `dense`, the weights without edges, from
// build_execution): true when its edges run clearly faster than the dense weights on a synthetic input
// of this layer's shape, with output `kind`.
bool plan_pays(const uint32_t* words, const bconv::WeightShape& s, const Built& plan, const Built& dense,
               bconv::Output kind);

// Bit by bit, the value most of `members` hold (rows of kw words); a tie takes the first member's.
std::vector<uint32_t> majority(const uint32_t* words, const std::vector<int64_t>& members, int64_t kw);
// A star (its root first, then the root's children; rows of kw words) runs from its bitwise majority
// (ties: the root's bit) on the CPU when the star differs from it in fewer bits, by more than an edge's
// fixed cost in bits, than the children differ from the root. Returns the majority then, else empty.
std::vector<uint32_t> star_majority(const uint32_t* words, const std::vector<int64_t>& star, int64_t kw);

// Version 2's weights section (compress.cc): appended to `out`, and read back from exactly [p, end) for a
// checked parent array; the reader fails with CorruptPlan on anything the writer would not have written.
void append_weights(const uint32_t* words, const WeightShape& s, const std::vector<int32_t>& parent,
                    std::vector<uint8_t>& out);
std::vector<uint32_t> read_weights(const uint8_t* p, const uint8_t* end, const WeightShape& s,
                                   const std::vector<int32_t>& parent);

}  // namespace xnorm::mst
