// Helpers shared by the files of the binary conv (not part of bconv.h).
#pragma once
#include <cstdint>
#include <string>

#include "bconv.h"

namespace xnorm::bconv {

inline int32_t popc(uint32_t v) { return int32_t(__builtin_popcount(v)); }
inline bool bit_at(const uint32_t* words, int64_t i) { return (words[i >> 5] >> (i & 31)) & 1u; }
inline std::string num(int64_t v) { return std::to_string(v); }

// Rejects non-finite scale or bias values and a clamp with lo > hi.
void check_transform(const Transform& t, int64_t cout);

}  // namespace xnorm::bconv
