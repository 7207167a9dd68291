#include "weights.h"

#include "../core/common/checked.h"
#include "../core/common/error.h"
#include "args.h"
#include "errors.h"
#include "families.h"
#include "handles.h"
#include "run_op.h"

namespace xnorm::addon {
namespace {

const napi_type_tag kWeightsTag = {0x786e6f726d776569ull, 0x6768747370616b64ull};  // "xnormwei" "ghtspakd"
const napi_type_tag kPlanTag = {0x786e6f726d6d7374ull, 0x706c616e6e6f6465ull};     // "xnormmst" "plannode"

mst::Reuse read_reuse(Args& a) {
  std::string r = a.choice("reuse", {"auto", "always", "never"});
  return r == "auto" ? mst::Reuse::Auto : r == "always" ? mst::Reuse::Always : mst::Reuse::Never;
}

const char* reuse_name(mst::Reuse r) {
  return r == mst::Reuse::Auto ? "auto" : r == mst::Reuse::Always ? "always" : "never";
}

Napi::Int32Array int32_array(Napi::Env env, const std::vector<int32_t>& v) {
  Napi::Int32Array arr = Napi::Int32Array::New(env, v.size());
  std::copy(v.begin(), v.end(), arr.Data());
  return arr;
}

// A plan over `w` for a checked tree: its execution, level tables and the plugin's edge table, all
// computed here once.
std::shared_ptr<Plan> make_plan(std::shared_ptr<PackedWeights> w, mst::Tree tree, mst::Reuse reuse, int32_t max_depth) {
  auto p = std::make_shared<Plan>();
  p->weights = w;  // first: an edgeless plan's execution is the weights' own
  mst::check_plan(tree.parent, w->shape, reuse, max_depth);
  p->built = mst::build_execution(w->words.data(), w->shape, tree.parent);
  p->levels = mst::levels(tree.parent, p->built, w->shape);
  for (int64_t off : p->levels.edge_offsets) {
    const uint32_t* r = p->built.edges.data() + off;
    p->gpu_edges.push_back({int32_t(r[0]), int32_t(r[1]), int32_t(r[2]), int32_t(r[3]), off + 4});
  }
  p->tree = std::move(tree);
  p->reuse = reuse;
  p->max_depth = max_depth;
  return p;
}

// What JS keeps of a plan: its handle and a description (copies: editing them changes nothing).
Napi::Value plan_info(Napi::Env env, std::shared_ptr<Plan> p) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("parent", int32_array(env, p->tree.parent));
  o.Set("depthOf", int32_array(env, p->levels.depth_of));
  o.Set("depth", p->built.depth);
  o.Set("totalDistance", double(p->built.total_distance));
  o.Set("bitsProcessed", p->built.bits_processed);
  o.Set("nedges", double(p->built.nedges));
  o.Set("majorityChannels", double(p->built.virtual_group.size()));
  o.Set("reuse", reuse_name(p->reuse));
  o.Set("edgesFor", p->tree.bits_only ? "bits" : "all");
  o.Set("maxDepth", p->max_depth);
  o.Set("plan", make_handle(env, new std::shared_ptr<Plan>(std::move(p)), kPlanTag));
  return o;
}

// A weights object over canonical words (packed from floats or decoded from a plan's bytes).
std::shared_ptr<PackedWeights> packed_weights(const bconv::WeightShape& s, std::vector<uint32_t> words) {
  auto w = std::make_shared<PackedWeights>();
  w->shape = s;
  w->words = std::move(words);
  w->dense = mst::build_execution(w->words.data(), s, std::vector<int32_t>(size_t(s.cout), -1));
  return w;
}

Napi::Value PackWeights(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "packWeights");
    std::vector<int64_t> d = a.shape("wShape");
    if (d.size() != 4) fail(ErrorCode::Shape, "packWeights: w: expected [Cout, Cin/groups, kh, kw], received " + shape_str(d));
    bconv::WeightShape s;
    s.cout = d[0], s.cin_g = d[1], s.kh = d[2], s.kw = d[3];
    s.groups = a.integer("groups", 1, int64_t(1) << 30);
    bconv::check_weight_shape(s);
    const auto* src = static_cast<const float*>(a.host("w", DType::Float32, checked_mul(s.cout * s.cin_g, s.taps(), "w")).data);
    const int64_t nwords = checked_mul(s.cout, s.row_words(), "weights");
    // Packing and the panels of a large layer take tens of ms: the async form runs them on the thread pool.
    return run_op(a, [s, src, nwords]() -> ResultBuilder {
      std::vector<uint32_t> words(static_cast<size_t>(nwords));
      bconv::pack_weights(src, s, words.data());
      std::shared_ptr<PackedWeights> w = packed_weights(s, std::move(words));
      return [w](Napi::Env env) { return make_handle(env, new std::shared_ptr<PackedWeights>(w), kWeightsTag); };
    });
  });
}

Napi::Value WeightsWords(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "weightsWords");
    auto w = weights_arg(info[0].As<Napi::Object>().Get("weights"), "weightsWords: weights");
    Napi::Uint32Array arr = Napi::Uint32Array::New(info.Env(), w->words.size());
    std::copy(w->words.begin(), w->words.end(), arr.Data());
    return Napi::Value(arr);
  });
}

Napi::Value MstPlan(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "mstPlan");
    auto w = weights_arg(info[0].As<Napi::Object>().Get("weights"), "mstPlan: w");
    const mst::Reuse reuse = read_reuse(a);
    const auto max_depth = int32_t(a.integer("maxDepth", 1, 65535));
    // `parent` (tests and tools): adopt this tree, checked by build_execution, instead of building one.
    mst::Tree tree;
    const bool adopt = a.has("parent");
    if (adopt) {
      const auto* p = static_cast<const int32_t*>(a.host("parent", DType::Int32, w->shape.cout).data);
      a.check_live();
      tree.parent.assign(p, p + w->shape.cout);
    }
    // An 'auto' tree times the executor (calibration once per process, then a trial): the async form
    // runs it on the thread pool.
    return run_op(a, [w, tree, adopt, reuse, max_depth]() mutable -> ResultBuilder {
      if (!adopt) tree = mst::build_tree(w->words.data(), w->shape, reuse, max_depth);
      std::shared_ptr<Plan> p = make_plan(std::move(w), std::move(tree), reuse, max_depth);
      return [p](Napi::Env env) { return plan_info(env, p); };
    });
  });
}

Napi::Value MstSerialize(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "mstSerialize");
    auto p = plan_arg(info[0].As<Napi::Object>().Get("plan"), "MstPlan.serialize: plan");
    const PackedWeights& w = *p->weights;
    std::vector<uint8_t> bytes = mst::serialize(w.words.data(), w.shape, p->tree, p->reuse, p->max_depth, a.flag("withWeights"));
    Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), bytes.size());
    std::copy(bytes.begin(), bytes.end(), out.Data());
    return Napi::Value(out);
  });
}

// Without `weights` the bytes must carry their own (version 2): the result then also holds the rebuilt
// weights' handle and shape.
Napi::Value MstDeserialize(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "mstDeserialize");
    std::shared_ptr<PackedWeights> w;
    if (a.has("weights")) w = weights_arg(info[0].As<Napi::Object>().Get("weights"), "MstPlan.deserialize: w");
    Napi::Value bv = info[0].As<Napi::Object>().Get("bytes");
    if (!bv.IsTypedArray() || bv.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      fail(ErrorCode::CorruptPlan, "MstPlan.deserialize: bytes: expected a Uint8Array, received " + describe(bv));
    const auto len = int64_t(bv.As<Napi::TypedArray>().ElementLength());
    Buffer bytes = a.host("bytes", DType::UInt8, len);
    a.check_live();
    mst::Serialized d = mst::deserialize(static_cast<const uint8_t*>(bytes.data), len, w ? w->words.data() : nullptr,
                                         w ? &w->shape : nullptr);
    const bool rebuilt = !w;
    if (rebuilt) w = packed_weights(d.shape, std::move(d.words));
    Napi::Object o = plan_info(info.Env(), make_plan(w, std::move(d.tree), d.reuse, d.max_depth)).As<Napi::Object>();
    if (rebuilt) {
      const bconv::WeightShape& s = w->shape;
      Napi::Array shape = Napi::Array::New(info.Env(), 4);
      const int64_t dims[4] = {s.cout, s.cin_g, s.kh, s.kw};
      for (uint32_t i = 0; i < 4; ++i) shape.Set(i, double(dims[i]));
      Napi::Object r = Napi::Object::New(info.Env());
      r.Set("shape", shape);
      r.Set("groups", double(s.groups));
      r.Set("weights", make_handle(info.Env(), new std::shared_ptr<PackedWeights>(std::move(w)), kWeightsTag));
      o.Set("rebuilt", r);
    }
    return Napi::Value(o);
  });
}

Napi::Value ReleaseDeviceCopies(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "releaseDeviceCopies");
    Napi::Object o = info[0].As<Napi::Object>();
    if (a.has("weights")) weights_arg(o.Get("weights"), "releaseDeviceCopies: weights")->device_words.release();
    if (a.has("plan")) plan_arg(o.Get("plan"), "releaseDeviceCopies: plan")->device_edges.release();
    return info.Env().Undefined();
  });
}

// Test hook: how a plan's next call on a CUDA device runs ('dense', 'plan' or 'trial').
Napi::Value PlanGpuMode(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "planGpuMode");
    auto p = plan_arg(info[0].As<Napi::Object>().Get("plan"), "planGpuMode: plan");
    const Plan::GpuMode m = p->gpu_mode(int32_t(a.integer("device", 0, 1 << 20)));
    return Napi::Value(Napi::String::New(info.Env(), m == Plan::GpuMode::Dense ? "dense" : m == Plan::GpuMode::Edges ? "plan" : "trial"));
  });
}

}  // namespace

DeviceRef DeviceCopies::on(int32_t device, const void* host, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  DeviceRef& mem = copies_[device];
  if (!mem) mem = device_copy(device, host, bytes);
  return mem;
}

void DeviceCopies::release() {
  std::lock_guard<std::mutex> lock(mutex_);
  copies_.clear();
}

Plan::GpuMode Plan::gpu_mode(int32_t device) {
  if (built.nedges == 0) return GpuMode::Dense;
  if (reuse != mst::Reuse::Auto) return GpuMode::Edges;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = edges_pay_.find(device);
  return it == edges_pay_.end() ? GpuMode::Trial : it->second ? GpuMode::Edges : GpuMode::Dense;
}

// Like the CPU's trial in mst::build_tree: the edges are kept only when the plan ran >= 5 % faster.
void Plan::record_trial(int32_t device, double plan_ms, double dense_ms) {
  std::lock_guard<std::mutex> lock(mutex_);
  edges_pay_[device] = plan_ms < 0.95 * dense_ms;
}

bool Plan::cpu_runs_edges(const uint32_t* x, const bconv::ConvParams& p, const bconv::Transform& t, int64_t pixels) {
  if (built.nedges == 0 || (tree.bits_only && !bconv::sliced_bits_output(p, t, weights->shape.cout))) return false;
  if (reuse != mst::Reuse::Auto || pixels >= mst::kTrialPixels) return true;
  const auto key = std::make_tuple(pixels, t.kind, p.pad_zero);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = cpu_pays_.find(key);
    if (it != cpu_pays_.end()) return it->second;
  }
  // Not under the lock: calls of other sizes go on meanwhile; a concurrent first call of this size
  // runs its own trial and the first verdict recorded stands.
  const bool pays = mst::edges_pay(x, weights->words.data(), weights->shape, built.execution(), weights->execution(), p,
                                   t, true, "MST trial at " + std::to_string(pixels) + " output pixels, " +
                                          std::to_string(weights->shape.cout) + " channels");
  std::lock_guard<std::mutex> lock(mutex_);
  return cpu_pays_.emplace(key, pays).first->second;
}

std::shared_ptr<PackedWeights> weights_arg(const Napi::Value& v, const std::string& name) {
  return handle_arg<std::shared_ptr<PackedWeights>>(v, kWeightsTag, name, "BinaryWeights (from packWeights)");
}

std::shared_ptr<Plan> plan_arg(const Napi::Value& v, const std::string& name) {
  return handle_arg<std::shared_ptr<Plan>>(v, kPlanTag, name, "an MstPlan (from mstPlan)");
}

void init_weights(Napi::Env env, Napi::Object exports) {
  exports.Set("packWeights", Napi::Function::New(env, PackWeights));
  exports.Set("weightsWords", Napi::Function::New(env, WeightsWords));
  exports.Set("mstPlan", Napi::Function::New(env, MstPlan));
  exports.Set("mstSerialize", Napi::Function::New(env, MstSerialize));
  exports.Set("mstDeserialize", Napi::Function::New(env, MstDeserialize));
  exports.Set("releaseDeviceCopies", Napi::Function::New(env, ReleaseDeviceCopies));
  exports.Set("planGpuMode", Napi::Function::New(env, PlanGpuMode));
}

}  // namespace xnorm::addon
