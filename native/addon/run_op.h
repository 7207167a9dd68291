// One mechanism for both forms of every op: the Sync form runs the work on the calling thread; the
// async form runs it on one of xnorm's op threads (the kernels then fan out on xnorm's pool) and returns
// a Promise, settled back on the JS thread. The typed arrays the work reads and writes stay referenced
// until it ends.
#pragma once
#include <napi.h>

#include <functional>
#include <vector>

#include "args.h"

namespace xnorm::addon {

// `work` must only touch the buffers collected by `args` and C++ values it captured by copy.
// It returns the op's result value builder, run back on the JS thread (nullptr: resolves undefined).
// `inline_bytes`: a small CPU op's bytes read and written (-1: not one; a compute-bound op passes its
// bytes only when its multiply-adds are at most kInlineMacs). Up to kInlineBytes, the async form runs it
// here and returns a settled Promise: that work (a few µs) costs less than handing it to another thread
// and back.
using ResultBuilder = std::function<Napi::Value(Napi::Env)>;
constexpr int64_t kInlineBytes = int64_t(256) << 10;
constexpr int64_t kInlineMacs = int64_t(1) << 16;
Napi::Value run_op(Args& args, std::function<ResultBuilder()> work, int64_t inline_bytes = -1);

}  // namespace xnorm::addon
