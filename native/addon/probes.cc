// Bindings of the measurements the benchmarks and the MST cost model use: the machine ceilings
// (native/core/probes: streaming read, FMA peak, XOR+popcount peak) and MST's calibrated costs.
#include "../core/mst/mst.h"
#include "../core/probes/ceilings.h"
#include "args.h"
#include "errors.h"
#include "families.h"
#include "run_op.h"

namespace xnorm::addon {
namespace {

double seconds_arg(Args& a, const char* op) {
  const double seconds = a.number("seconds");
  if (!(seconds > 0 && seconds <= 10)) fail(ErrorCode::Argument, std::string(op) + ": seconds: expected a number in (0, 10]");
  return seconds;
}

// The memory-read ceiling (a streaming sum over a Uint32Array).
Napi::Value ReadSum(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
      fail(ErrorCode::Argument, "readSum: expected a Uint32Array, received " + describe(info[0]));
    auto a = info[0].As<Napi::Uint32Array>();
    return Napi::Number::New(info.Env(), read_sum(a.Data(), int64_t(a.ElementLength())));
  });
}

Napi::Value FmaPeak(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "fmaPeak");
    const double seconds = seconds_arg(a, "fmaPeak");
    return run_op(a, [seconds]() -> ResultBuilder {
      const double gflops = convbn::fma_peak_gflops(seconds);
      return [gflops](Napi::Env env) { return Napi::Number::New(env, gflops); };
    });
  });
}

Napi::Value PopcountPeak(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "popcountPeak");
    return Napi::Value(Napi::Number::New(info.Env(), bconv::popcount_peak(seconds_arg(a, "popcountPeak"))));
  });
}

Napi::Value MstCalibration(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "mstCalibration");
    const std::string output = a.has("output") ? a.choice("output", {"int32", "float", "bits"}) : "int32";
    const mst::Costs& k = mst::calibrated_costs(output == "bits" ? bconv::Output::Bits : bconv::Output::Int32);
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("densePerWord", k.dense_per_word);
    o.Set("reusePerBit", k.reuse_per_bit);
    o.Set("reusePerEdge", k.reuse_per_edge);
    o.Set("transposePerWord", k.transpose_per_word);
    return Napi::Value(o);
  });
}

}  // namespace

void init_probes(Napi::Env env, Napi::Object exports) {
  exports.Set("readSum", Napi::Function::New(env, ReadSum));
  exports.Set("fmaPeak", Napi::Function::New(env, FmaPeak));
  exports.Set("popcountPeak", Napi::Function::New(env, PopcountPeak));
  exports.Set("mstCalibration", Napi::Function::New(env, MstCalibration));
}

}  // namespace xnorm::addon
