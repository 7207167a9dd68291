// XnormError construction. The error class is registered by lib/ at load time and kept in the
// per-environment instance data, so every worker thread gets its own and nothing static holds JS values.
#pragma once
#include <napi.h>

#include <memory>
#include <string>
#include <utility>

#include "../core/common/error.h"

namespace xnorm::addon {

struct AddonData {
  Napi::FunctionReference error_class;
  // worker_threads' markAsUntransferable: memory an async op reads can then never be detached (a
  // postMessage or structuredClone transfer of it copies instead), so it cannot be freed under the op.
  Napi::FunctionReference mark_untransferable;
  // Where this environment's async ops settle (run_op.cc), made on the first one.
  std::shared_ptr<class Completions> completions;
};

// An XnormError instance (or, before lib/ registered the class, an Error with `code`).
Napi::Error make_error(Napi::Env env, ErrorCode code, const std::string& message);

// How a C++ failure reaches JS, for the Sync forms (guarded) and the async ones (run_op.cc) alike: core
// errors keep their code, allocation failures are ERR_XNORM_OUT_OF_MEMORY, anything else unexpected is
// reported rather than crashing the process.
struct Failure {
  ErrorCode code;
  std::string message;
};
Failure failure_of(const std::exception& e);

// Runs fn and catches its failure as the JS value to reject with: a JS error thrown by fn (a result
// builder's) as itself, a C++ failure as an XnormError. For promises, which settle rather than throw.
struct Outcome {
  Napi::Value value;
  bool ok;
};
template <typename F>
Outcome outcome_of(Napi::Env env, F&& fn) {
  try {
    return {fn(), true};
  } catch (const Napi::Error& e) {
    return {e.Value(), false};
  } catch (const std::exception& e) {
    const Failure f = failure_of(e);
    return {make_error(env, f.code, f.message).Value(), false};
  }
}

// Runs fn and throws its failure as outcome_of catches it: the Sync forms.
template <typename F>
Napi::Value guarded(Napi::Env env, F&& fn) {
  Outcome o = outcome_of(env, std::forward<F>(fn));
  if (!o.ok) throw Napi::Error(env, o.value);
  return o.value;
}

}  // namespace xnorm::addon
