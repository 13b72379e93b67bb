// A tiny thread-level emulator of the CUDA features the srd kernels use, so that the device code
// (crystal_kernels.cuh, ead_kernels.cuh, neighbors_kernels.cuh) can be compiled by the host compiler
// and executed on a machine without a GPU (selfcheck.py compares it with the CPU ops).
//
// Every CUDA thread of a block is a std::thread; __syncthreads() is a std::barrier over the block, a
// warp shuffle is a store / warp barrier / load / warp barrier; __shared__ variables become function
// statics (blocks run one after the other, so they are shared by exactly one block's threads). A
// barrier reached by only part of the block (divergent __syncthreads, a real CUDA bug) hangs the
// emulation instead of passing silently; emu::launch aborts after a timeout.
//
// It checks the logic (pair enumeration, tiling, windows, prefix sums, reductions, indexing), not the
// device's floating-point details (the host paths of ead_math.h are used: polynomial sin/cos/exp)
// nor the memory model. Include it AFTER any torch header and BEFORE the kernel headers.
#pragma once

#define SRD_CUDA_EMULATION 1

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
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

inline thread_local dim3 tl_thread_idx;
inline dim3 g_block_idx, g_block_dim;

struct Warp {
  std::barrier<> bar{32};
  uint64_t buf[32];
};

struct Block {
  explicit Block(unsigned n) : bar(n) {
    for (unsigned w = 0; w < (n + 31) / 32; ++w) warps.emplace_back(new Warp);
  }
  std::barrier<> bar;
  std::vector<std::unique_ptr<Warp>> warps;
};

inline Block* g_block = nullptr;
inline std::vector<unsigned char> g_smem;
inline std::mutex g_atomic_mutex;

// Runs body() as the grid [grid] x [block] threads, with `smem` bytes of dynamic shared memory.
template <typename Body>
void launch(int64_t grid, unsigned block, size_t smem, Body&& body) {
  g_block_dim.x = block;
  g_smem.assign(smem + 64, 0xA5);  // garbage, as on the device
  for (int64_t b = 0; b < grid; ++b) {
    g_block_idx.x = static_cast<unsigned>(b);
    Block blk(block);
    g_block = &blk;
    std::atomic<unsigned> done{0};
    std::vector<std::thread> th;
    th.reserve(block);
    for (unsigned t = 0; t < block; ++t)
      th.emplace_back([&, t] {
        tl_thread_idx.x = t;
        body();
        done.fetch_add(1);
      });
    const auto start = std::chrono::steady_clock::now();
    while (done.load() < block) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      if (std::chrono::steady_clock::now() - start > std::chrono::seconds(120)) {
        std::fprintf(stderr, "emu::launch: block %lld did not finish (divergent barrier?)\n",
                     static_cast<long long>(b));
        std::abort();
      }
    }
    for (auto& x : th) x.join();
    g_block = nullptr;
  }
}

inline unsigned char* smem() {
  // 16-byte aligned, like extern __shared__ __align__(16).
  uintptr_t p = reinterpret_cast<uintptr_t>(g_smem.data());
  return reinterpret_cast<unsigned char*>((p + 15) & ~uintptr_t(15));
}

template <typename T>
T shuffle(T v, int src_lane, bool take) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  Warp& w = *g_block->warps[tl_thread_idx.x / 32];
  const unsigned lane = tl_thread_idx.x & 31;
  std::memcpy(&w.buf[lane], &v, sizeof(T));
  w.bar.arrive_and_wait();
  T r = v;
  if (take) std::memcpy(&r, &w.buf[src_lane], sizeof(T));
  w.bar.arrive_and_wait();
  return r;
}

}  // namespace emu

#define threadIdx (emu::tl_thread_idx)
#define blockIdx (emu::g_block_idx)
#define blockDim (emu::g_block_dim)

inline void __syncthreads() { emu::g_block->bar.arrive_and_wait(); }

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

inline int atomicMin(int* p, int v) {
  std::lock_guard<std::mutex> lock(emu::g_atomic_mutex);
  const int old = *p;
  *p = std::min(old, v);
  return old;
}

inline int atomicMax(int* p, int v) {
  std::lock_guard<std::mutex> lock(emu::g_atomic_mutex);
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
