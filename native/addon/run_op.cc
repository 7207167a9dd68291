#include "run_op.h"

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>

#include "../core/common/cond_var.h"
#include "../core/common/error.h"
#include "../core/common/spin.h"
#include "../core/common/thread_pool.h"
#include "errors.h"

namespace xnorm::addon {

// An async op from its call to the settling of its promise.
struct AsyncOp {
  std::shared_ptr<Completions> home;
  std::function<ResultBuilder()> work;
  napi_deferred deferred = nullptr;
  std::vector<napi_ref> keep;  // the arrays it reads and writes
  ResultBuilder result;
  bool failed = false;
  Failure failure{ErrorCode::Argument, {}};
};

// Per environment: hands finished ops back to its JS thread through one thread-safe function (ops that
// finish close together settle in one wake-up of the event loop), and holds the environment's teardown
// (a worker_thread terminated mid-op) until none of its ops runs: they write into its arrays.
class Completions {
 public:
  // This environment's, made on its first async op.
  static std::shared_ptr<Completions> of(Napi::Env env);

  // JS thread: counts the op in (the event loop stays alive while ops are unsettled) and queues it.
  void submit(napi_env env, AsyncOp* op);
  // Op thread, after the work: queues the op for settle() on the JS thread, or drops it when the
  // environment is going away.
  void finish(AsyncOp* op);
  bool closing() const { return closing_.load(); }

 private:
  static void settle(napi_env env, napi_value, void* context, void* data);
  static void teardown(void* arg);

  napi_threadsafe_function tsfn_ = nullptr;
  int unsettled_ = 0;  // JS thread only
  std::mutex mu_;
  CondVar idle_;
  int running_ = 0;  // submitted and not yet handed back; guarded by mu_
  std::atomic<bool> closing_{false};
};

namespace {

constexpr int kMaxOpThreads = 4;

// Called from a catch block on an op thread: the exception being handled, as the op's failure. Never
// throws (an exception leaving an op thread would end the process), even when recording it cannot
// allocate.
void record_failure(Failure& out) noexcept {
  try {
    try {
      throw;
    } catch (const std::exception& e) {
      out = failure_of(e);
    } catch (...) {
      out = {ErrorCode::Argument, "internal error: unknown exception in an async op"};
    }
  } catch (...) {
    out.code = ErrorCode::OutOfMemory;
    out.message.clear();
  }
}

// The threads that run async ops: process-wide (environments share them) and never destroyed, like the
// kernel pool, holding no JS values. An idle one spins briefly before it sleeps, so the next op of a
// request, issued as soon as the previous one settled, starts without a wake-up. Each computes only in
// one of the pool's compute slots (BackgroundCaller): however many ops are in flight, at most
// setNumThreads() threads compute.
class OpThreads {
 public:
  // Throws (std::system_error) only when no op thread exists and none can be started.
  void push(AsyncOp* op) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (int(queue_.size()) >= idle_ && threads_ < kMaxOpThreads) {
        try {
          std::thread([this] { loop(); }).detach();
          ++threads_;  // the new thread needs mu_ before it can count itself busy
          ++idle_;
        } catch (const std::system_error&) {
          if (threads_ == 0) throw;  // else the threads there are take the op in turn
        }
      }
      queue_.push_back(op);
      queued_.store(int(queue_.size()));
    }
    cv_.notify_one();
  }

 private:
  void loop() {
    BackgroundCaller background;
    for (;;) {
      spin_until([&] { return queued_.load() > 0; });
      AsyncOp* op;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return !queue_.empty(); });
        op = queue_.front();
        queue_.pop_front();
        queued_.store(int(queue_.size()));
        --idle_;
      }
      run(op);
      std::lock_guard<std::mutex> lock(mu_);
      ++idle_;
    }
  }

  static void run(AsyncOp* op) {
    const std::shared_ptr<Completions> home = op->home;  // finish() may free the op
    if (!home->closing()) {
      try {
        op->result = op->work();
      } catch (...) {
        op->failed = true;
        record_failure(op->failure);
      }
    }
    op->work = nullptr;  // what it captured goes here, off the JS thread
    home->finish(op);
  }

  std::mutex mu_;
  CondVar cv_;
  std::deque<AsyncOp*> queue_;
  std::atomic<int> queued_{0};  // queue_.size(), for idle threads to spin on
  int idle_ = 0;
  int threads_ = 0;
};

OpThreads& op_threads() {
  static OpThreads* t = new OpThreads();
  return *t;
}

}  // namespace

std::shared_ptr<Completions> Completions::of(Napi::Env env) {
  auto* data = env.GetInstanceData<AddonData>();
  if (data->completions) return data->completions;
  auto c = std::make_shared<Completions>();
  napi_value name;
  if (napi_create_string_utf8(env, "xnorm", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr, c.get(), settle, &c->tsfn_) !=
          napi_ok)
    throw Napi::Error::New(env);
  napi_unref_threadsafe_function(env, c->tsfn_);
  // Registered after the thread-safe function, so it runs before that function's own cleanup (hooks
  // run in reverse order): no op can call the function once it is gone.
  napi_add_env_cleanup_hook(env, teardown, new std::shared_ptr<Completions>(c));
  data->completions = c;
  return c;
}

void Completions::submit(napi_env env, AsyncOp* op) {
  if (unsettled_++ == 0) napi_ref_threadsafe_function(env, tsfn_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++running_;
  }
  try {
    op_threads().push(op);
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --running_;
    }
    if (--unsettled_ == 0) napi_unref_threadsafe_function(env, tsfn_);
    throw;
  }
}

void Completions::finish(AsyncOp* op) {
  std::lock_guard<std::mutex> lock(mu_);
  // Dropped when closing: its environment can no longer run JS, and its references die with it. (The
  // call cannot fail otherwise: the function closes only after teardown() set closing_.)
  if (closing_.load() || napi_call_threadsafe_function(tsfn_, op, napi_tsfn_nonblocking) != napi_ok) delete op;
  if (--running_ == 0) idle_.notify_all();
}

void Completions::settle(napi_env env, napi_value, void* context, void* data) {
  std::unique_ptr<AsyncOp> op(static_cast<AsyncOp*>(data));
  if (env == nullptr) return;  // the function is being torn down with its environment: drop the op
  auto* self = static_cast<Completions*>(context);
  if (--self->unsettled_ == 0) napi_unref_threadsafe_function(env, self->tsfn_);
  // Never lets an exception escape: in an environment that is stopping, every N-API call fails and the
  // promise can only be dropped.
  Napi::Env e(env);
  try {
    Napi::HandleScope scope(e);
    const Outcome o = op->failed ? Outcome{make_error(e, op->failure.code, op->failure.message).Value(), false}
                                 : outcome_of(e, [&] { return op->result ? op->result(e) : e.Undefined(); });
    if (o.ok)
      napi_resolve_deferred(env, op->deferred, o.value);
    else
      napi_reject_deferred(env, op->deferred, o.value);
  } catch (...) {
  }
  for (napi_ref r : op->keep) napi_delete_reference(env, r);
}

void Completions::teardown(void* arg) {
  std::unique_ptr<std::shared_ptr<Completions>> self(static_cast<std::shared_ptr<Completions>*>(arg));
  Completions& c = **self;
  std::unique_lock<std::mutex> lock(c.mu_);
  c.closing_.store(true);
  c.idle_.wait(lock, [&] { return c.running_ == 0; });
}

Napi::Value run_op(Args& args, std::function<ResultBuilder()> work, int64_t inline_bytes) {
  Napi::Env env = args.env();
  args.check_live();
  if (!args.async()) {
    ResultBuilder r = work();
    return r ? r(env) : env.Undefined();
  }
  if (inline_bytes >= 0 && inline_bytes <= kInlineBytes) {
    Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
    const Outcome o = outcome_of(env, [&] {
      ResultBuilder r = work();
      return r ? r(env) : env.Undefined();
    });
    if (o.ok)
      d.Resolve(o.value);
    else
      d.Reject(o.value);
    return d.Promise();
  }
  args.pin();
  auto op = std::make_unique<AsyncOp>();
  op->home = Completions::of(env);
  op->work = std::move(work);
  napi_value promise = nullptr;
  try {
    op->keep.reserve(args.buffers().size());
    for (const Napi::Value& v : args.buffers()) {
      napi_ref r;
      if (napi_create_reference(env, v, 1, &r) != napi_ok) throw Napi::Error::New(env);
      op->keep.push_back(r);
    }
    if (napi_create_promise(env, &op->deferred, &promise) != napi_ok) throw Napi::Error::New(env);
    op->home->submit(env, op.get());
  } catch (...) {
    // Not queued: free what was made (the promise, never returned, is resolved only to free it).
    for (napi_ref r : op->keep) napi_delete_reference(env, r);
    if (promise) napi_resolve_deferred(env, op->deferred, env.Undefined());
    throw;
  }
  op.release();  // the op threads and then settle() own it
  return Napi::Value(env, promise);
}

}  // namespace xnorm::addon
