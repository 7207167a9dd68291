// Each op family registers its bindings from its own file (bnstats.cc, convbn.cc, binary.cc with
// weights.cc), the CUDA plugin's loading and device memory from cuda_loader.cc, and the machine-ceiling
// probes from probes.cc, the tfjs backend's elementwise, reduction and pooling kernels from tensor_ops.cc.
#pragma once
#include <napi.h>

namespace xnorm::addon {

void init_bnstats(Napi::Env env, Napi::Object exports);
void init_binary(Napi::Env env, Napi::Object exports);
void init_cuda(Napi::Env env, Napi::Object exports);
void init_convbn(Napi::Env env, Napi::Object exports);
void init_probes(Napi::Env env, Napi::Object exports);
void init_tensor_ops(Napi::Env env, Napi::Object exports);

}  // namespace xnorm::addon
