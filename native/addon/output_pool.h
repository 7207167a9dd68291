// Host memory for the output tensors xnorm makes, kept warm between calls. A fresh output page costs a
// page fault to touch (microseconds each on these VMs: a 6 MB output can cost more than the conv that
// fills it), and a server allocating the same shapes for every request pays that on every request.
// Outputs of 128 KiB and more (tfjs backend: 4 KiB; from 16 KiB where an idle block of their class is
// left, see warmOutput) come from here as external ArrayBuffers; dispose() (releaseOutput) detaches
// the buffer and returns its block at once, the GC does the same for tensors never disposed, and a block
// is reused only after every op reading or writing it has ended. Blocks are never zero-filled: only ops
// that write every element of their output use this memory. Process-wide, mutex-protected, holds no JS
// values (worker_threads share it).
#pragma once
#include <napi.h>

#include <cstdint>
#include <memory>

namespace xnorm::addon {

// The smallest block (lib/ asks from 128 KiB on, or from 16 KiB for idle blocks only; the tfjs backend, which returns blocks as soon as tfjs
// frees a tensor, from 4 KiB: there malloc's heap, trimmed and grown again, faulted on every op).
constexpr uint64_t kPoolMinBytes = uint64_t(4) << 10;

// A keep-alive for the pooled block holding `p` (null when p is not in a live pooled block).
std::shared_ptr<void> pooled_block_of(const void* p);

void init_output_pool(Napi::Env env, Napi::Object exports);

}  // namespace xnorm::addon
