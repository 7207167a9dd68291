// Prepared conv weights: packed once, read by every later forward call (see PreparedWeights in convbn.h).
#include <cstdint>

#include "../common/checked.h"
#include "convbn_internal.h"

namespace xnorm::convbn {

PreparedWeights::PreparedWeights(const float* w, int64_t cout_, int64_t cin_g_, int64_t kh_, int64_t kw_, int64_t groups_)
    : cout(cout_), cin_g(cin_g_), kh(kh_), kw(kw_), groups(groups_) {
  const int64_t k = checked_mul(cin_g * kh, kw, "weight"), size = checked_mul(cout, k, "weight");
  w_.assign(w, w + size);
  if (cin_g == 1) return;  // direct loops read the taps as they are
  const Kernels& kern = active_kernels();
  const int64_t cout_g = cout / groups;
  group_floats_ = kern.packed_floats(cout_g, k);
  panels_.resize(size_t(checked_mul(group_floats_, groups, "packed weights")));
  for (int64_t gr = 0; gr < groups; ++gr) kern.pack_weights(w_.data() + gr * cout_g * k, cout_g, k, panels_.data() + gr * group_floats_);
}

const float* PreparedWeights::panels(int64_t group) const {
  return panels_.empty() ? nullptr : panels_.data() + group * group_floats_;
}

namespace {
// The first 64-byte aligned float of v (which holds 16 floats more than its contents need): the
// micro-kernel reads B panels with aligned vector loads.
float* aligned64(std::vector<float>& v) {
  const auto p = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
}
}  // namespace

const float* PreparedWeights::winograd(int tile) const {
  std::lock_guard<std::mutex> lock(lazy_mutex_);
  std::vector<float>& u = tile == 4 ? winograd4_ : winograd_;
  if (u.empty()) {
    const Kernels& kern = active_kernels();
    u.resize(size_t(kern.winograd_floats(cout, cin_g, tile)));
    kern.winograd_weights(w_.data(), cout, cin_g, tile, u.data());
  }
  return u.data();
}

const float* PreparedWeights::winograd_rows() const {
  std::lock_guard<std::mutex> lock(lazy_mutex_);
  if (winograd_rows_.empty()) {
    const Kernels& kern = active_kernels();
    winograd_rows_.resize(size_t(kern.winograd_rows_floats(cout, cin_g) + 16));
    kern.winograd_rows_weights(w_.data(), cout, cin_g, aligned64(winograd_rows_));
  }
  return aligned64(winograd_rows_);
}

std::vector<float> PreparedWeights::ohwi() const {
  ConvShape g;
  g.cout = cout, g.c = cin_g * groups, g.kh = kh, g.kw = kw, g.groups = groups;
  std::vector<float> w(w_.size());
  weights_to_ohwi(g, w_.data(), w.data());
  return w;
}

const float* PreparedWeights::nhwc_panels(int64_t group) const {
  std::lock_guard<std::mutex> lock(lazy_mutex_);
  if (nhwc_panels_.empty()) {
    const Kernels& kern = active_kernels();
    const int64_t cout_g = cout / groups, k = cin_g * kh * kw;
    const std::vector<float> w = ohwi();
    nhwc_panels_.resize(panels_.size());
    for (int64_t gr = 0; gr < groups; ++gr)
      kern.pack_weights(w.data() + gr * cout_g * k, cout_g, k, nhwc_panels_.data() + gr * group_floats_);
  }
  return nhwc_panels_.data() + group * group_floats_;
}

const float* PreparedWeights::nhwc_b_panels(int64_t group) const {
  std::lock_guard<std::mutex> lock(lazy_mutex_);
  const Kernels& kern = active_kernels();
  const int64_t cout_g = cout / groups, k = cin_g * kh * kw, per_group = kern.packed_b_floats(k, cout_g);
  if (nhwc_b_panels_.empty()) {  // per_group keeps each group's panels aligned
    nhwc_b_panels_.resize(size_t(per_group * groups + 16));
    for (int64_t gr = 0; gr < groups; ++gr)
      kern.pack_weights_b(w_.data() + gr * cout_g * k, nullptr, kh * kw, k, cout_g, aligned64(nhwc_b_panels_) + gr * per_group);
  }
  return aligned64(nhwc_b_panels_) + group * per_group;
}

int64_t PreparedWeights::bytes() const {
  std::lock_guard<std::mutex> lock(lazy_mutex_);
  return int64_t(sizeof(float) * (w_.size() + panels_.size() + winograd_.size() + winograd4_.size() + winograd_rows_.size() +
                                 nhwc_panels_.size() + nhwc_b_panels_.size()));
}

}  // namespace xnorm::convbn
