// Opaque native objects handed to JS: a type-tagged N-API External owning a T. The tag makes sure a
// handle argument is one of ours and of the right kind; anything else is ERR_XNORM_ARGUMENT.
#pragma once
#include <napi.h>

#include <string>

#include "../core/common/error.h"
#include "args.h"

namespace xnorm::addon {

template <typename T>
Napi::Value make_handle(Napi::Env env, T* obj, const napi_type_tag& tag) {
  Napi::External<T> ext;
  try {
    ext = Napi::External<T>::New(env, obj, [](Napi::Env, T* p) { delete p; });
  } catch (...) {
    delete obj;
    throw;
  }
  ext.TypeTag(&tag);
  return ext;
}

template <typename T>
T& handle_arg(const Napi::Value& v, const napi_type_tag& tag, const std::string& name, const char* what) {
  if (!v.IsExternal() || !v.As<Napi::External<T>>().CheckTypeTag(&tag))
    fail(ErrorCode::Argument, name + ": expected " + what + ", received " + describe(v));
  return *v.As<Napi::External<T>>().Data();
}

}  // namespace xnorm::addon
