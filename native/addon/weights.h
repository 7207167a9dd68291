// Native weight objects: packed binary weights and MST plans. Each is made and validated once, in one
// native call, and reaches JS as an opaque handle (a type-tagged External) that later calls pass back;
// nothing in them can be edited from JS. They own their device copies (uploaded once per CUDA device on
// first use, freed by releaseDeviceCopies or with the object). Ops in flight hold shared references, so a
// handle collected by the GC mid-op frees nothing the op still reads.
#pragma once
#include <napi.h>

#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "../core/bconv/bconv.h"
#include "../core/mst/levels.h"
#include "../core/mst/mst.h"
#include "cuda_plugin.h"

namespace xnorm::addon {

// Host data uploaded to each CUDA device on first use and kept there.
class DeviceCopies {
 public:
  DeviceRef on(int32_t device, const void* host, uint64_t bytes);
  void release();

 private:
  std::mutex mutex_;
  std::map<int32_t, DeviceRef> copies_;
};

struct PackedWeights {
  bconv::WeightShape shape;
  std::vector<uint32_t> words;  // canonical [Cout][kh][kw][wg]
  mst::Built dense;             // panels of every channel, no edges
  DeviceCopies device_words;

  bconv::Execution execution() const { return dense.execution(); }
};

struct Plan {
  std::shared_ptr<PackedWeights> weights;
  mst::Tree tree;  // the parent array, and whether the CPU runs its edges for 'bits' output only
  mst::Reuse reuse = mst::Reuse::Auto;
  int32_t max_depth = 1;
  mst::Built built;
  mst::Levels levels;
  std::vector<xnorm_cuda_mst_edge> gpu_edges;  // the plugin's edge table, in level order
  DeviceCopies device_edges;                   // the edge records the plugin reads the word triples from

  // A plan without edges runs the weights' own dense execution (the same panels, not a copy).
  bconv::Execution execution() const { return built.nedges ? built.execution() : weights->execution(); }
  // 'auto' plans on a GPU: whether the first call on each device found the edges >= 5 % faster than dense.
  enum class GpuMode { Dense, Edges, Trial };
  GpuMode gpu_mode(int32_t device);
  void record_trial(int32_t device, double plan_ms, double dense_ms);
  // Whether a CPU call of `pixels` output pixels runs the edges: 'always' plans do; 'auto' plans from
  // mst::kTrialPixels, and below it per (pixels, output kind, padding) as the first such call's trial
  // (on that call's input x) found. A tree.bits_only plan never does for a call whose output is not
  // bit-sliced 'bits' (bconv::sliced_bits_output): those are timed like int32, where its edges lost.
  bool cpu_runs_edges(const uint32_t* x, const bconv::ConvParams& p, const bconv::Transform& t, int64_t pixels);

 private:
  std::mutex mutex_;
  std::map<int32_t, bool> edges_pay_;
  std::map<std::tuple<int64_t, bconv::Output, bool>, bool> cpu_pays_;
};

// The object behind a handle argument (ERR_XNORM_ARGUMENT when it is not one).
std::shared_ptr<PackedWeights> weights_arg(const Napi::Value& v, const std::string& name);
std::shared_ptr<Plan> plan_arg(const Napi::Value& v, const std::string& name);

void init_weights(Napi::Env env, Napi::Object exports);

}  // namespace xnorm::addon
