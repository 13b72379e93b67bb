// A tiny thread-level emulator of the CUDA features the srd kernels use, so that the CUDA sources
// (the device code crystal_kernels.cuh, ead_kernels.cuh, neighbors_kernels.cuh and the host glue
// crystal_cuda.cuh, ead_cuda.cuh, neighbors_cuda.cuh) can be compiled by the host compiler and run
// on a machine without a GPU (emulation_ops.cpp; compared with the CPU ops by selfcheck.py and
// tests/test_cuda_emulation.py).
//
// Every CUDA thread of a block is a fiber (ucontext: its own stack, switched cooperatively on one OS
// thread). A fiber runs until it waits at a barrier: __syncthreads() is a barrier over the block, a
// warp shuffle a store / warp barrier / load (double-buffered, so one barrier per shuffle). Blocks run
// one after the other, so __shared__ variables become function statics shared by exactly one block's
// threads. A barrier that part of the block never reaches (a divergent __syncthreads or a shuffle
// outside converged code: a real CUDA bug) is detected when no fiber can make progress, and aborts
// with a message instead of passing silently.
//
// It checks the logic (pair enumeration, tiling, windows, prefix sums, reductions, indexing, launch
// shapes and buffer sizes), not the device's floating-point details (the host paths of ead_math.h are
// used: polynomial sin/cos/exp) nor the memory model (threads interleave only at barriers, so a
// missing barrier between a shared-memory write and a read of another thread can go unnoticed).
// Include it AFTER every torch header and BEFORE the CUDA headers.
#pragma once

#define SRD_CUDA_EMULATION 1

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __grid_constant__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

namespace emu {

// A barrier of `count` fibers: the last arrival releases it (generation + 1).
struct Barrier {
  unsigned count = 0, arrived = 0;
  uint64_t generation = 0;
};

struct Fiber {
  ucontext_t ctx;
  std::unique_ptr<char[]> stack;
  const Barrier* waiting = nullptr;  // the barrier it waits at (nullptr: runnable)
  uint64_t wait_generation = 0;
  bool done = false;
};

struct Warp {
  Barrier bar;
  uint64_t buf[2][32];  // shuffle values, by barrier generation parity
};

constexpr size_t kStackBytes = 256 * 1024;

struct Block {
  std::vector<Fiber> fibers;  // one per thread, reused across blocks and launches
  std::vector<Warp> warps;
  Barrier bar;
  ucontext_t scheduler;
  unsigned current = 0;   // the running fiber
  uint64_t progress = 0;  // arrivals, releases and finished fibers
  void (*entry)(void*) = nullptr;
  void* entry_arg = nullptr;
};

inline Block g_block;
inline dim3 g_block_idx, g_block_dim, g_thread_idx;

// Switch back to the scheduler until `b` has moved past `generation`.
inline void wait(Barrier& b, uint64_t generation) {
  Fiber& f = g_block.fibers[g_block.current];
  f.waiting = &b;
  f.wait_generation = generation;
  swapcontext(&f.ctx, &g_block.scheduler);
}

inline void arrive_and_wait(Barrier& b) {
  const uint64_t gen = b.generation;
  ++g_block.progress;
  if (++b.arrived == b.count) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  wait(b, gen);
}

inline void fiber_main() {
  Block& blk = g_block;
  blk.entry(blk.entry_arg);
  blk.fibers[blk.current].done = true;
  ++blk.progress;
  // returning resumes uc_link = the scheduler
}

inline std::vector<unsigned char> g_smem;

inline unsigned char* smem() {
  // 16-byte aligned, like extern __shared__ __align__(16).
  uintptr_t p = reinterpret_cast<uintptr_t>(g_smem.data());
  return reinterpret_cast<unsigned char*>((p + 15) & ~uintptr_t(15));
}

// Runs body() as the grid [grid] x [block] threads, with `smem_bytes` of dynamic shared memory.
template <typename Body>
void launch(int64_t grid, unsigned block, size_t smem_bytes, Body&& body) {
  Block& blk = g_block;
  if (blk.fibers.size() < block) {
    const size_t old = blk.fibers.size();
    blk.fibers.resize(block);
    for (size_t t = old; t < block; ++t) blk.fibers[t].stack.reset(new char[kStackBytes]);
  }
  const unsigned n_warps = (block + 31) / 32;
  blk.warps.assign(n_warps, Warp{});
  for (unsigned w = 0; w < n_warps; ++w) blk.warps[w].bar.count = std::min(32u, block - 32 * w);
  g_block_dim.x = block;
  g_smem.assign(smem_bytes + 64, 0xA5);  // garbage, as on the device
  blk.entry = [](void* arg) { (*static_cast<std::remove_reference_t<Body>*>(arg))(); };
  blk.entry_arg = static_cast<void*>(&body);
  for (int64_t b = 0; b < grid; ++b) {
    g_block_idx.x = static_cast<unsigned>(b);
    blk.bar = Barrier{};
    blk.bar.count = block;
    for (unsigned w = 0; w < n_warps; ++w) blk.warps[w].bar.arrived = 0;
    for (unsigned t = 0; t < block; ++t) {
      Fiber& f = blk.fibers[t];
      f.done = false;
      f.waiting = nullptr;
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = f.stack.get();
      f.ctx.uc_stack.ss_size = kStackBytes;
      f.ctx.uc_link = &blk.scheduler;
      makecontext(&f.ctx, fiber_main, 0);
    }
    unsigned live = block;
    while (live > 0) {
      const uint64_t before = blk.progress;
      live = 0;
      for (unsigned t = 0; t < block; ++t) {
        Fiber& f = blk.fibers[t];
        if (f.done) continue;
        if (f.waiting && f.waiting->generation == f.wait_generation) {  // still blocked
          ++live;
          continue;
        }
        f.waiting = nullptr;
        blk.current = t;
        g_thread_idx.x = t;
        swapcontext(&blk.scheduler, &f.ctx);
        if (!f.done) ++live;
      }
      if (live > 0 && blk.progress == before) {
        std::fprintf(stderr,
                     "emu::launch: block %lld of %lld (%u threads) cannot make progress: a barrier or warp "
                     "shuffle is not reached by every thread (divergent __syncthreads?)\n",
                     static_cast<long long>(b), static_cast<long long>(grid), block);
        std::abort();
      }
    }
  }
}

template <typename T>
T shuffle(T v, int src_lane, bool take) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  Warp& w = g_block.warps[g_thread_idx.x / 32];
  const unsigned lane = g_thread_idx.x & 31;
  uint64_t* buf = w.buf[w.bar.generation & 1];
  std::memcpy(&buf[lane], &v, sizeof(T));
  arrive_and_wait(w.bar);
  // The next shuffle of this warp writes the other buffer, and the one after it can only start once
  // every lane has passed the next barrier, i.e. has read this one.
  T r = v;
  if (take) std::memcpy(&r, &buf[src_lane], sizeof(T));
  return r;
}

}  // namespace emu

#define threadIdx (emu::g_thread_idx)
#define blockIdx (emu::g_block_idx)
#define blockDim (emu::g_block_dim)

inline void __syncthreads() { emu::arrive_and_wait(emu::g_block.bar); }

template <typename T>
T __shfl_up_sync(unsigned, T v, int offset) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  return emu::shuffle(v, lane - offset, lane >= offset);
}

template <typename T>
T __shfl_down_sync(unsigned, T v, int offset) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  return emu::shuffle(v, lane + offset, lane + offset < 32);
}

// Fibers never interleave inside these: plain read-modify-writes are atomic.
inline int atomicMin(int* p, int v) {
  const int old = *p;
  *p = std::min(old, v);
  return old;
}

inline int atomicMax(int* p, int v) {
  const int old = *p;
  *p = std::max(old, v);
  return old;
}

inline float __int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, 4);
  return f;
}

inline double __longlong_as_double(long long v) {
  double d;
  std::memcpy(&d, &v, 8);
  return d;
}

// Unqualified math calls of the device code.
namespace srd {
using std::isfinite;
using std::max;
using std::min;
}  // namespace srd
