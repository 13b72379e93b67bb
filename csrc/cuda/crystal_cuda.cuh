// Host glue shared by the CUDA ops (ead_cuda.cuh, neighbors_cuda.cuh): the few CUDA runtime calls
// they make, a kernel launcher, the preparation of a batch (crystal_kernels.cuh) from torch tensors
// and the opt-in to large dynamic shared memory.
//
// The host glue is compiled twice from the same source: by nvcc for the package (the real runtime),
// and by the host compiler for the CPU emulation of the CUDA kernels (cuda/selfcheck, with
// SRD_CUDA_EMULATION defined by cuda_emulation.h), where a launch runs the kernel's threads on the CPU
// (emu::launch), streams and device guards are no-ops and tensors are CPU tensors. So the emulator
// checks the launch shapes, shared-memory sizes, buffers and kernel order of the real ops too.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#if !defined(SRD_CUDA_EMULATION)
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#endif

#include "cuda/crystal_kernels.cuh"

namespace srd {
namespace gpu {
namespace {

#if defined(SRD_CUDA_EMULATION)
using Stream = int;  // the emulator runs every launch synchronously, in order
// Sets the current device for a scope (no-op in the emulator).
struct DeviceGuard {
  explicit DeviceGuard(c10::Device) {}
};
inline Stream current_stream() { return 0; }
// Opt-in limit of dynamic shared memory per block of the emulated device (sm_90: 227 kB).
constexpr int kEmulatedSmemOptin = 227 * 1024;
#else
using Stream = cudaStream_t;
using DeviceGuard = c10::cuda::CUDAGuard;
inline Stream current_stream() { return c10::cuda::getCurrentCUDAStream(); }
#endif

// kernel<<<blocks, threads, smem, stream>>>(args...) and the launch check. Nothing is launched for
// blocks == 0 (an empty grid is a launch error in CUDA).
template <typename... Params, typename... Args>
inline void launch(void (*kernel)(Params...), int64_t blocks, int threads, size_t smem, Stream stream, Args&&... args) {
  if (blocks <= 0) return;
#if defined(SRD_CUDA_EMULATION)
  (void)stream;
  emu::launch(blocks, static_cast<unsigned>(threads), smem, [&] { kernel(args...); });
#else
  kernel<<<static_cast<unsigned>(blocks), threads, smem, stream>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

// Blocks of `threads` threads covering n items.
inline int64_t blocks_for(int64_t n, int threads) { return (n + threads - 1) / threads; }

// Device buffers of a prepared batch (kept alive by the tensors) and their raw view.
struct PreparedBatch {
  at::Tensor cells, ok, wrapped, frac, offset, crystal;
  DeviceBatch view;
};

// Runs the two preparation kernels on `stream`. positions [N, 3], cells [B, 3, 3] (dtype T),
// ptr [B + 1]: contiguous tensors on the device (N >= 1, B >= 1).
template <typename T>
PreparedBatch prepare_batch(const at::Tensor& positions, const at::Tensor& cells, const at::Tensor& ptr,
                            Stream stream) {
  const int64_t N = positions.size(0), B = cells.size(0);
  const auto opt = positions.options();
  PreparedBatch pb;
  pb.cells = at::empty({B * static_cast<int64_t>(sizeof(Cell<double>))}, opt.dtype(at::kByte));
  pb.ok = at::empty({B}, opt.dtype(at::kInt));
  pb.wrapped = at::empty({N, 3}, opt.dtype(at::kDouble));
  pb.frac = at::empty({N, 3}, opt.dtype(at::kDouble));
  pb.offset = at::empty({N, 3}, opt.dtype(at::kLong));
  pb.crystal = at::empty({N}, opt.dtype(at::kInt));
  DeviceBatch& v = pb.view;
  v.cells = reinterpret_cast<Cell<double>*>(pb.cells.data_ptr());
  v.ok = pb.ok.data_ptr<int>();
  v.wrapped = pb.wrapped.data_ptr<double>();
  v.frac = pb.frac.data_ptr<double>();
  v.offset = pb.offset.data_ptr<int64_t>();
  v.crystal = pb.crystal.data_ptr<int>();
  v.ptr = ptr.data_ptr<int64_t>();
  v.n_atoms = N;
  v.n_crystals = B;
  Cell<double>* cells_d = reinterpret_cast<Cell<double>*>(pb.cells.data_ptr());
  constexpr int kThreads = 128;
  launch(prep_cells_kernel<T>, blocks_for(B, kThreads), kThreads, 0, stream, cells.data_ptr<T>(), B, cells_d,
         pb.ok.data_ptr<int>());
  launch(prep_atoms_kernel<T>, blocks_for(N, kThreads), kThreads, 0, stream, positions.data_ptr<T>(),
         ptr.data_ptr<int64_t>(), N, B, static_cast<const Cell<double>*>(cells_d), pb.ok.data_ptr<int>(),
         pb.wrapped.data_ptr<double>(), pb.frac.data_ptr<double>(), pb.offset.data_ptr<int64_t>(),
         pb.crystal.data_ptr<int>());
  return pb;
}

// Opt into more than 48 kB of dynamic shared memory when a launch needs it, with a clear error
// when the device cannot provide it.
template <typename Kernel>
inline void set_dynamic_smem(Kernel kernel, size_t bytes, const char* op) {
  if (bytes <= 48 * 1024) return;
  int limit = 0;
#if defined(SRD_CUDA_EMULATION)
  (void)kernel;
  limit = kEmulatedSmemOptin;
#else
  int dev = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
#endif
  TORCH_CHECK_VALUE(bytes <= static_cast<size_t>(limit), op, ": this grid needs ", bytes,
                    " bytes of shared memory per block but the device allows ", limit,
                    "; use fewer etas/mus or CPU tensors");
#if !defined(SRD_CUDA_EMULATION)
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
#endif
}

}  // namespace
}  // namespace gpu
}  // namespace srd
