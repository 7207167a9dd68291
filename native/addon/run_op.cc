#include "run_op.h"

#include <string>

#include "../core/common/error.h"
#include "../core/common/thread_pool.h"
#include "errors.h"

namespace xnorm::addon {
namespace {

class OpWorker : public Napi::AsyncWorker {
 public:
  OpWorker(Napi::Env env, const std::vector<Napi::Value>& keep, std::function<ResultBuilder()> work)
      : Napi::AsyncWorker(env, "xnorm"), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)) {
    for (const Napi::Value& v : keep) keep_.push_back(Napi::Persistent(v.As<Napi::Object>()));
  }

  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    BackgroundCaller background;  // computes only in one of the pool's compute slots
    try {
      result_ = work_();
      return;
    } catch (const std::exception& e) {
      const Failure f = failure_of(e);
      code_ = f.code;
      message_ = f.message;
    }
    SetError(message_);
  }

  void OnOK() override {
    settle([&](Napi::Env env) { deferred_.Resolve(result_ ? result_(env) : env.Undefined()); });
  }

  void OnError(const Napi::Error&) override {
    settle([&](Napi::Env env) { deferred_.Reject(make_error(env, code_, message_).Value()); });
  }

 private:
  // Settles the promise without ever letting an exception escape: when a worker_thread is terminated
  // mid-op, its environment refuses to run JS and every N-API call fails; the promise can then only
  // be dropped, and throwing from here would abort the whole process.
  template <typename F>
  void settle(F&& fn) {
    Napi::Env env = Env();
    try {
      Napi::HandleScope scope(env);
      try {
        fn(env);
      } catch (const Napi::Error& e) {
        deferred_.Reject(e.Value());
      }
    } catch (...) {
    }
  }

  Napi::Promise::Deferred deferred_;
  std::function<ResultBuilder()> work_;
  ResultBuilder result_;
  std::vector<Napi::ObjectReference> keep_;
  ErrorCode code_ = ErrorCode::Argument;
  std::string message_;
};

}  // namespace

Napi::Value run_op(Args& args, std::function<ResultBuilder()> work, int64_t inline_bytes) {
  Napi::Env env = args.env();
  args.check_live();
  if (!args.async()) {
    ResultBuilder r = work();
    return r ? r(env) : env.Undefined();
  }
  if (inline_bytes >= 0 && inline_bytes <= kInlineBytes) {
    Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
    try {
      ResultBuilder r = work();
      d.Resolve(r ? r(env) : env.Undefined());
    } catch (const std::exception& e) {
      const Failure f = failure_of(e);
      d.Reject(make_error(env, f.code, f.message).Value());
    }
    return d.Promise();
  }
  args.pin();
  auto* worker = new OpWorker(env, args.buffers(), std::move(work));
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

}  // namespace xnorm::addon
