// XnormError construction. The error class is registered by lib/ at load time and kept in the
// per-environment instance data, so every worker thread gets its own and nothing static holds JS values.
#pragma once
#include <napi.h>

#include <string>

#include "../core/common/error.h"

namespace xnorm::addon {

struct AddonData {
  Napi::FunctionReference error_class;
};

// An XnormError instance (or, before lib/ registered the class, an Error with `code`).
Napi::Error make_error(Napi::Env env, ErrorCode code, const std::string& message);

// Runs fn and turns C++ failures into XnormErrors: core errors keep their code, allocation failure is
// ERR_XNORM_OUT_OF_MEMORY, anything else unexpected is reported rather than crashing the process.
template <typename F>
Napi::Value guarded(Napi::Env env, F&& fn) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const Error& e) {
    throw make_error(env, e.code(), e.what());
  } catch (const std::bad_alloc&) {
    throw make_error(env, ErrorCode::OutOfMemory, "out of memory while allocating native scratch space");
  } catch (const std::exception& e) {
    throw make_error(env, ErrorCode::Argument, std::string("internal error: ") + e.what());
  }
}

}  // namespace xnorm::addon
