// Errors raised by the core kernels. The addon maps each code to an XnormError with the same code.
#pragma once
#include <stdexcept>
#include <string>

namespace xnorm {

enum class ErrorCode { Shape, DType, Device, Argument, Disposed, CudaUnavailable, OutOfMemory, NativeLoad, CorruptPlan };

inline const char* error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::Shape: return "ERR_XNORM_SHAPE";
    case ErrorCode::DType: return "ERR_XNORM_DTYPE";
    case ErrorCode::Device: return "ERR_XNORM_DEVICE";
    case ErrorCode::Argument: return "ERR_XNORM_ARGUMENT";
    case ErrorCode::Disposed: return "ERR_XNORM_DISPOSED";
    case ErrorCode::CudaUnavailable: return "ERR_XNORM_CUDA_UNAVAILABLE";
    case ErrorCode::OutOfMemory: return "ERR_XNORM_OUT_OF_MEMORY";
    case ErrorCode::NativeLoad: return "ERR_XNORM_NATIVE_LOAD";
    case ErrorCode::CorruptPlan: return "ERR_XNORM_CORRUPT_PLAN";
  }
  return "ERR_XNORM_ARGUMENT";
}

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] inline void fail(ErrorCode code, const std::string& message) { throw Error(code, message); }

}  // namespace xnorm
