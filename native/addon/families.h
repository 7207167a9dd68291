// Each op family registers its bindings from its own file (bnstats.cc, convbn.cc, binary.cc), and the
// CUDA plugin's device-memory and op bindings from cuda_loader.cc / cuda_ops.cc.
#pragma once
#include <napi.h>

namespace xnorm::addon {

void init_bnstats(Napi::Env env, Napi::Object exports);
void init_binary(Napi::Env env, Napi::Object exports);
void init_cuda(Napi::Env env, Napi::Object exports);
void init_convbn(Napi::Env env, Napi::Object exports);

}  // namespace xnorm::addon
