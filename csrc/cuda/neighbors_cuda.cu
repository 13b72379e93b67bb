// srd::nearest_pairs on CUDA: for every crystal, the pair (i <= j, shift s) at the minimum interatomic
// distance over all periodic images (self-images count, the zero vector does not), as in
// cpu/neighbors_cpu.cpp. Only the integer search lives here; the distance is recomputed
// differentiably in Python. Geometry is float64 for both input dtypes, as on the CPU.
//
// nearest_kernel (neighbors_kernels.cuh): one block of 128 threads per crystal (grid B blocks, no
// dynamic shared memory; 128 x 20 bytes of static shared memory for the reduction). The search
// radius is the length of the shortest lattice vector (an upper bound of the answer: the self-image
// along it), inflated by 64 ulp so that the self-image itself is never lost to rounding. The
// candidate lines (i, j >= i, na, nb) inside the plane-spacing box for fractional differences in
// (-1, 1) are numbered
//   L = ((i * n + j) * NA + (na - alo)) * NB + (nb - blo),
// i.e. in the CPU's loop order; a line outside the CPU's own (i, j) box is skipped, and the exact nc
// range comes from the same quadratic (line_range). Each thread keeps its best (r2, L, nc) and a
// fixed shared-memory tree picks the smallest r2, ties going to the smallest (L, nc): the pair the
// CPU loops visit first. Deterministic; no host synchronisation. A crystal flagged invalid (see
// crystal_kernels.cuh) gets index -1 and shift 0.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <climits>
#include <cstdint>

#include "common/ead_grid.h"
#include "cuda/crystal_cuda.cuh"
#include "cuda/neighbors_kernels.cuh"

namespace srd {
namespace gpu {
namespace {

std::tuple<at::Tensor, at::Tensor> nearest_pairs_cuda(const at::Tensor& positions, const at::Tensor& cells,
                                                      const at::Tensor& ptr) {
  check_structure_args("srd.nearest_pairs", positions, at::Tensor(), cells, ptr);
  const c10::cuda::CUDAGuard guard(positions.device());
  const at::Tensor pos = positions.contiguous(), cel = cells.contiguous(), pt = ptr.contiguous();
  const int64_t N = pos.size(0), B = cel.size(0);
  at::Tensor index = at::empty({B, 2}, pos.options().dtype(at::kLong));
  at::Tensor shifts = at::empty({B, 3}, pos.options().dtype(at::kLong));
  if (B == 0) return {index, shifts};
  TORCH_CHECK_VALUE(N > 0, "srd.nearest_pairs: crystal 0 is empty (N = 0 atoms for ", B,
                    " crystals); every crystal needs at least one atom");
  TORCH_CHECK_VALUE(N <= INT_MAX, "srd.nearest_pairs: the CUDA kernels support at most ", INT_MAX,
                    " atoms, got ", N);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "nearest_pairs_cuda", [&] {
    const PreparedBatch pb = prepare_batch<scalar_t>(pos, cel, pt, stream);
    nearest_kernel<<<static_cast<unsigned>(B), kNearestThreads, 0, stream>>>(
        pb.view, index.data_ptr<int64_t>(), shifts.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {index, shifts};
}

}  // namespace
}  // namespace gpu

TORCH_LIBRARY_IMPL(srd, CUDA, m) { m.impl("nearest_pairs", &gpu::nearest_pairs_cuda); }

}  // namespace srd
