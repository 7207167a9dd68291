// XnormError construction. The error class is registered by lib/ at load time and kept in the
// per-environment instance data, so every worker thread gets its own and nothing static holds JS values.
#pragma once
#include <napi.h>

#include <stdexcept>
#include <string>

#include "../core/common/error.h"

namespace xnorm::addon {

struct AddonData {
  Napi::FunctionReference error_class;
  // worker_threads' markAsUntransferable: memory an async op reads can then never be detached (a
  // postMessage or structuredClone transfer of it copies instead), so it cannot be freed under the op.
  Napi::FunctionReference mark_untransferable;
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
  } catch (const std::length_error&) {
    throw make_error(env, ErrorCode::OutOfMemory, "native scratch space of that size cannot be allocated");
  } catch (const std::exception& e) {
    throw make_error(env, ErrorCode::Argument, std::string("internal error: ") + e.what());
  }
}

}  // namespace xnorm::addon
