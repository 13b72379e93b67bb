// Host glue shared by the CUDA ops: preparation of a batch (crystal_kernels.cuh) from torch tensors
// and the opt-in to large dynamic shared memory.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/crystal_kernels.cuh"

namespace srd {
namespace gpu {
namespace {

// Device buffers of a prepared batch (kept alive by the tensors) and their raw view.
struct PreparedBatch {
  at::Tensor cells, ok, wrapped, frac, offset, crystal;
  DeviceBatch view;
};

// Runs the two preparation kernels on `stream`. positions [N, 3], cells [B, 3, 3] (dtype T),
// ptr [B + 1]: contiguous CUDA tensors (N >= 1, B >= 1).
template <typename T>
PreparedBatch prepare_batch(const at::Tensor& positions, const at::Tensor& cells, const at::Tensor& ptr,
                               cudaStream_t stream) {
  const int64_t N = positions.size(0), B = cells.size(0);
  const auto opt = positions.options();
  at::Tensor cells_buf = at::empty({B * static_cast<int64_t>(sizeof(Cell<double>))}, opt.dtype(at::kByte));
  at::Tensor ok = at::empty({B}, opt.dtype(at::kInt));
  at::Tensor wrapped = at::empty({N, 3}, opt.dtype(at::kDouble));
  at::Tensor frac = at::empty({N, 3}, opt.dtype(at::kDouble));
  at::Tensor offset = at::empty({N, 3}, opt.dtype(at::kLong));
  at::Tensor crystal = at::empty({N}, opt.dtype(at::kInt));
  Cell<double>* cells_d = reinterpret_cast<Cell<double>*>(cells_buf.data_ptr());
  constexpr int kThreads = 128;
  prep_cells_kernel<T><<<static_cast<unsigned>((B + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      cells.data_ptr<T>(), B, cells_d, ok.data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  prep_atoms_kernel<T><<<static_cast<unsigned>((N + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      positions.data_ptr<T>(), ptr.data_ptr<int64_t>(), N, B, cells_d, ok.data_ptr<int>(),
      wrapped.data_ptr<double>(), frac.data_ptr<double>(), offset.data_ptr<int64_t>(), crystal.data_ptr<int>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  PreparedBatch pb;
  DeviceBatch& v = pb.view;
  v.cells = cells_d;
  v.ok = ok.data_ptr<int>();
  v.wrapped = wrapped.data_ptr<double>();
  v.frac = frac.data_ptr<double>();
  v.offset = offset.data_ptr<int64_t>();
  v.crystal = crystal.data_ptr<int>();
  v.ptr = ptr.data_ptr<int64_t>();
  v.n_atoms = N;
  v.n_crystals = B;
  pb.cells = cells_buf;
  pb.ok = ok;
  pb.wrapped = wrapped;
  pb.frac = frac;
  pb.offset = offset;
  pb.crystal = crystal;
  return pb;
}

// Opt into more than 48 kB of dynamic shared memory when a launch needs it, with a clear error
// when the device cannot provide it.
template <typename Kernel>
inline void set_dynamic_smem(Kernel kernel, size_t bytes, const char* op) {
  if (bytes <= 48 * 1024) return;
  int dev = 0, limit = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  TORCH_CHECK_VALUE(bytes <= static_cast<size_t>(limit), op, ": this grid needs ", bytes,
                    " bytes of shared memory per block but the device allows ", limit,
                    "; use fewer etas/mus or CPU tensors");
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

}  // namespace
}  // namespace gpu
}  // namespace srd
