// Host glue of srd::nearest_pairs on CUDA (registered in neighbors_cuda.cu; compiled unchanged by the CPU
// emulation of the kernels too, see crystal_cuda.cuh): for every crystal, the pair (i <= j, shift s) at the minimum
// interatomic distance over all periodic images (self-images count, the zero vector does not), as in
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
// i.e. in the CPU's lexicographic (i, j, na, nb) order; a line outside the pair's own plane-spacing box
// (image_range) is skipped, and the exact nc range comes from the same quadratic as on the CPU
// (line_range). (The CPU takes its lines from tighter exact ranges, cpu/crystal_cpu.h; the lines only
// these boxes add miss the sphere: see crystal_kernels.cuh.) Each thread keeps its best (r2, L, nc) and
// a fixed shared-memory tree picks the smallest r2, ties going to the smallest (L, nc): the first pair
// in that order (the CPU, too, keeps the first of equal pairs it visits; the tests compare distances).
// Deterministic; no host synchronisation. A crystal
// flagged invalid (see crystal_kernels.cuh) gets index -1 and shift 0.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <climits>
#include <cstdint>
#include <tuple>

#include "common/ead_grid.h"
#include "cuda/crystal_cuda.cuh"
#include "cuda/neighbors_kernels.cuh"

namespace srd {
namespace gpu {
namespace {

std::tuple<at::Tensor, at::Tensor> nearest_pairs_cuda(const at::Tensor& positions, const at::Tensor& cells,
                                                      const at::Tensor& ptr) {
  check_structure_args("srd.nearest_pairs", positions, at::Tensor(), cells, ptr);
  const DeviceGuard guard(positions.device());
  const at::Tensor pos = positions.contiguous(), cel = cells.contiguous(), pt = ptr.contiguous();
  const int64_t N = pos.size(0), B = cel.size(0);
  at::Tensor index = at::empty({B, 2}, pos.options().dtype(at::kLong));
  at::Tensor shifts = at::empty({B, 3}, pos.options().dtype(at::kLong));
  if (B == 0) return {index, shifts};
  TORCH_CHECK_VALUE(N > 0, "srd.nearest_pairs: crystal 0 is empty (N = 0 atoms for ", B,
                    " crystals); every crystal needs at least one atom");
  TORCH_CHECK_VALUE(N <= INT_MAX, "srd.nearest_pairs: the CUDA kernels support at most ", INT_MAX, " atoms, got ", N);
  const Stream stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "nearest_pairs_cuda", [&] {
    const PreparedBatch pb = prepare_batch<scalar_t>(pos, cel, pt, stream);
    launch(nearest_kernel, B, kNearestThreads, 0, stream, pb.view, index.data_ptr<int64_t>(),
           shifts.data_ptr<int64_t>());
  });
  return {index, shifts};
}

}  // namespace
}  // namespace gpu
}  // namespace srd
