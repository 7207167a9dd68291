#include "output_pool.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <new>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "../core/common/error.h"
#include "args.h"
#include "errors.h"

namespace xnorm::addon {
namespace {

struct Block {
  void* ptr;
  uint64_t bytes;  // the size class
};

// Size classes: 2^k, 1.25, 1.5 and 1.75 x 2^k bytes (at most 25 % unused), from kPoolMinBytes up.
uint64_t size_class(uint64_t bytes) {
  uint64_t top = kPoolMinBytes;
  while (top * 2 <= bytes) top *= 2;
  for (uint64_t q = 4; q <= 8; ++q)
    if (top / 4 * q >= bytes) return top / 4 * q;
  return top * 2;
}

constexpr uint64_t kHugeBlock = uint64_t(2) << 20;

void* os_alloc(uint64_t bytes) {
  // 2 MiB alignment for large blocks, so that transparent huge pages can back them (a fresh block faults
  // in 2 MiB at a time instead of 4 KiB; fewer TLB misses).
  const size_t align = bytes >= kHugeBlock ? size_t(2) << 20 : 64;
  void* p = ::operator new(size_t(bytes), std::align_val_t(align), std::nothrow);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p && align > 64) madvise(p, size_t(bytes), MADV_HUGEPAGE);
#endif
  return p;
}

void os_free(Block b) {
  ::operator delete(b.ptr, std::align_val_t(b.bytes >= kHugeBlock ? size_t(2) << 20 : 64));
}

// One ArrayBuffer's hold on its block: dropped by releaseOutput (dispose) or by the buffer's finalizer.
struct JsOwner {
  std::shared_ptr<void> block;
};

class Pool {
 public:
  // A block of at least `bytes`, shared: the last holder's release returns it to the idle lists. With
  // idle_only, null when no idle block of its class is left.
  std::shared_ptr<void> take(uint64_t bytes, void** data, bool idle_only) {
    const uint64_t cls = size_class(bytes);
    Block b{nullptr, cls};
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = idle_.find(cls);
      if (it != idle_.end() && !it->second.empty()) {
        b.ptr = it->second.back();
        it->second.pop_back();
        idle_bytes_ -= cls;
      }
    }
    if (!b.ptr && idle_only) return nullptr;
    if (!b.ptr) b.ptr = os_alloc(cls);
    if (!b.ptr) fail(ErrorCode::OutOfMemory, "output: cannot allocate " + std::to_string(bytes) + " bytes");
    *data = b.ptr;
    live_bytes_ += cls;
    return std::shared_ptr<void>(b.ptr, [this, b](void*) { give_back(b); });
  }

  // Registers an ArrayBuffer's owner under its block's address (replacing a stale entry of the same address).
  void track(void* ptr, uint64_t bytes, JsOwner* owner) {
    std::lock_guard<std::mutex> lock(mutex_);
    owners_[reinterpret_cast<uintptr_t>(ptr)] = {bytes, owner};
  }

  // The hold of the ArrayBuffer whose block starts at ptr, taken out of its owner (dispose).
  std::shared_ptr<void> untrack(const void* ptr) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = owners_.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == owners_.end()) return nullptr;
    return std::move(it->second.owner->block);
  }

  // The finalizer's part: forget the owner if the address still maps to it.
  void forget(JsOwner* owner, const void* ptr) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = owners_.find(reinterpret_cast<uintptr_t>(ptr));
    if (it != owners_.end() && it->second.owner == owner) owners_.erase(it);
  }

  std::shared_ptr<void> hold(const void* p) {
    if (owners_count_.load(std::memory_order_relaxed) == 0) return nullptr;
    std::lock_guard<std::mutex> lock(mutex_);
    const auto a = reinterpret_cast<uintptr_t>(p);
    auto it = owners_.upper_bound(a);
    if (it == owners_.begin()) return nullptr;
    --it;
    if (a >= it->first + it->second.bytes) return nullptr;
    return it->second.owner->block;
  }

  // One more idle block of the class of `bytes`, within the idle limit (its bytes reserved under the
  // lock, so concurrent calls cannot overshoot it). Nothing where the runtime refuses external buffers:
  // no block could ever be handed out.
  void warm(uint64_t bytes) {
    if (external_refused_.load()) return;
    const uint64_t cls = size_class(bytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (idle_bytes_ + cls > max_idle_) return;
      idle_bytes_ += cls;
    }
    void* p = os_alloc(cls);
    std::lock_guard<std::mutex> lock(mutex_);
    if (p) idle_[cls].push_back(p);
    else idle_bytes_ -= cls;
  }

  // The runtime refused an external ArrayBuffer (Electron's sandbox): idle-only requests get null.
  void refuse_external() { external_refused_.store(true); }
  bool external_refused() const { return external_refused_.load(); }

  void set_max_idle(uint64_t bytes) {
    std::vector<Block> freed;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      max_idle_ = bytes;
      trim(freed);
    }
    for (Block b : freed) os_free(b);
  }

  Napi::Object stats(Napi::Env env) {
    std::lock_guard<std::mutex> lock(mutex_);
    Napi::Object o = Napi::Object::New(env);
    o.Set("idleBytes", double(idle_bytes_));
    o.Set("liveBytes", double(live_bytes_.load()));
    o.Set("maxIdleBytes", double(max_idle_));
    return o;
  }

  void count_owner(int delta) { owners_count_ += delta; }

 private:
  struct Entry {
    uint64_t bytes;
    JsOwner* owner;
  };

  void give_back(Block b) {
    live_bytes_ -= b.bytes;
    std::vector<Block> freed;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      idle_[b.bytes].push_back(b.ptr);
      idle_bytes_ += b.bytes;
      trim(freed);
    }
    for (Block f : freed) os_free(f);
  }

  // Over the limit, the largest idle blocks go back to the system first.
  void trim(std::vector<Block>& freed) {
    for (auto it = idle_.rbegin(); idle_bytes_ > max_idle_ && it != idle_.rend(); ++it)
      while (idle_bytes_ > max_idle_ && !it->second.empty()) {
        freed.push_back({it->second.back(), it->first});
        it->second.pop_back();
        idle_bytes_ -= it->first;
      }
  }

  std::mutex mutex_;
  std::map<uint64_t, std::vector<void*>> idle_;  // size class -> idle blocks
  std::map<uintptr_t, Entry> owners_;            // block address -> the ArrayBuffer's owner
  uint64_t idle_bytes_ = 0;
  uint64_t max_idle_ = uint64_t(256) << 20;
  std::atomic<uint64_t> live_bytes_{0};
  std::atomic<int64_t> owners_count_{0};
  std::atomic<bool> external_refused_{false};
};

// Never destroyed: blocks may be given back by pool threads while the process exits.
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

struct FinalizeHint {
  JsOwner* owner;
  void* ptr;
};

// allocOutput({ bytes, idleOnly? }): an ArrayBuffer of exactly `bytes` on a pooled block (contents
// unspecified), or null where the runtime refuses external ArrayBuffers or, with idleOnly, when no idle
// block of its size class is left.
Napi::Value AllocOutput(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "allocOutput");
    const auto bytes = uint64_t(a.integer("bytes", int64_t(kPoolMinBytes), int64_t(1) << 52));
    const bool idle_only = a.flag("idleOnly");
    if (idle_only && pool().external_refused()) return info.Env().Null();
    void* data = nullptr;
    std::shared_ptr<void> block = pool().take(bytes, &data, idle_only);
    if (!block) return info.Env().Null();
    auto* owner = new JsOwner{std::move(block)};
    auto* hint = new FinalizeHint{owner, data};
    pool().track(data, bytes, owner);
    pool().count_owner(1);
    napi_value ab = nullptr;
    const napi_status st = napi_create_external_arraybuffer(
        info.Env(), data, size_t(bytes),
        [](napi_env, void*, void* h) {
          auto* fh = static_cast<FinalizeHint*>(h);
          pool().forget(fh->owner, fh->ptr);
          pool().count_owner(-1);
          delete fh->owner;  // drops its hold if dispose() did not
          delete fh;
        },
        hint, &ab);
    if (st != napi_ok) {  // a runtime without external ArrayBuffers (Electron's sandbox): JS allocates instead
      pool().refuse_external();
      pool().forget(owner, data);
      pool().count_owner(-1);
      delete owner;
      delete hint;
      return info.Env().Null();
    }
    return Napi::Value(info.Env(), ab);
  });
}

// releaseOutput(arrayBuffer): dispose() of a pooled tensor: detach the buffer (JS can no longer reach the
// memory) and drop its hold; the block is reused once no op in flight holds it.
Napi::Value ReleaseOutput(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Napi::Value v = info[0];
    if (!v.IsArrayBuffer()) fail(ErrorCode::Argument, "releaseOutput: expected an ArrayBuffer, received " + describe(v));
    auto ab = v.As<Napi::ArrayBuffer>();
    bool detached = false;
    napi_is_detached_arraybuffer(info.Env(), ab, &detached);
    if (detached) return info.Env().Undefined();
    std::shared_ptr<void> hold = pool().untrack(ab.Data());
    if (!hold) fail(ErrorCode::Argument, "releaseOutput: not an ArrayBuffer from allocOutput");
    ab.Detach();
    return info.Env().Undefined();
  });
}

// warmOutput({ bytes }): one more idle block of the size class of `bytes` (within the idle limit): the
// dispose() of a small output made in JS memory asks for it, so that the next output of that size comes
// from the pool (and its dispose() returns it there), while callers that never dispose stay on JS memory.
Napi::Value WarmOutput(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "warmOutput");
    pool().warm(uint64_t(a.integer("bytes", int64_t(kPoolMinBytes), int64_t(1) << 52)));
    return info.Env().Undefined();
  });
}

Napi::Value OutputPool(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] {
    Args a(info, "outputPool");
    if (a.has("maxIdleBytes")) pool().set_max_idle(uint64_t(a.integer("maxIdleBytes", 0, int64_t(1) << 52)));
    return Napi::Value(pool().stats(info.Env()));
  });
}

}  // namespace

std::shared_ptr<void> pooled_block_of(const void* p) { return pool().hold(p); }

void init_output_pool(Napi::Env env, Napi::Object exports) {
  exports.Set("allocOutput", Napi::Function::New(env, AllocOutput));
  exports.Set("releaseOutput", Napi::Function::New(env, ReleaseOutput));
  exports.Set("warmOutput", Napi::Function::New(env, WarmOutput));
  exports.Set("outputPool", Napi::Function::New(env, OutputPool));
}

}  // namespace xnorm::addon
