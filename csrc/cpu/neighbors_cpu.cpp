// srd::nearest_pairs on the CPU: for every crystal, the pair (i, j, s) of atoms at the minimum
// interatomic distance over all periodic images (self-images of an atom included, the zero vector
// from an atom to itself excluded; two distinct atoms at one place give distance 0). Only the integer search lives
// here; the distance itself is recomputed differentiably in Python as |pos_j - pos_i + s @ H| (differentiable geometry,
// non-differentiable search).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <limits>

#include "common/ead_grid.h"
#include "cpu/crystal_cpu.h"

namespace srd {
namespace {

void nearest_impl(const HostBatch& hb, int64_t* index, int64_t* shifts) {
  using T = double;
  at::parallel_for(0, hb.n_crystals, 1, [&](int64_t bbeg, int64_t bend) {
    for (int64_t b = bbeg; b < bend; ++b) {
      const Cell<T>& c = hb.cells[b];
      // The self-image along the shortest cell vector bounds the answer from above.
      T best = std::numeric_limits<T>::infinity();
      for (int r = 0; r < 3; ++r)
        best = std::min(best, std::sqrt(c.h[r][0] * c.h[r][0] + c.h[r][1] * c.h[r][1] + c.h[r][2] * c.h[r][2]));
      T best2 = std::numeric_limits<T>::infinity();
      int64_t bi = -1, bj = -1, bs[3] = {0, 0, 0};
      // The radius is widened by a few ulp: the self-image along the shortest vector has r2 = best^2 up
      // to rounding, and must not be filtered out by the search's r2 <= radius^2 test.
      const auto widen = [](T r) { return r * (T(1) + T(1e-12)) + T(1e-12); };
      for (int64_t i = hb.ptr[b]; i < hb.ptr[b + 1]; ++i) {
        // The search radius shrinks as closer pairs are found; ties keep the first pair visited.
        hb.for_each_neighbor(
            i, widen(best),
            [&](int64_t j, const double*, double r2, const int64_t* s) {
              if (j < i) return;  // each unordered pair once (its reverse has the same length)
              if (r2 < best2) {
                best2 = r2;
                bi = i;
                bj = j;
                for (int k = 0; k < 3; ++k) bs[k] = s[k];
              }
            },
            /*keep_coincident=*/true);  // two atoms at one place: d_min = 0
        if (best2 < best * best) best = std::sqrt(best2);
      }
      index[2 * b] = bi;
      index[2 * b + 1] = bj;
      for (int k = 0; k < 3; ++k) shifts[3 * b + k] = bs[k];
    }
  });
}

std::tuple<at::Tensor, at::Tensor> nearest_pairs_cpu(const at::Tensor& positions, const at::Tensor& cells,
                                                     const at::Tensor& ptr) {
  check_structure_args("srd.nearest_pairs", positions, at::Tensor(), cells, ptr);
  const at::Tensor pos = positions.contiguous(), cel = cells.contiguous(), pt = ptr.contiguous();
  const int64_t B = cel.size(0);
  at::Tensor index = at::empty({B, 2}, pos.options().dtype(at::kLong));
  at::Tensor shifts = at::empty({B, 3}, pos.options().dtype(at::kLong));
  if (B == 0) return {index, shifts};
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "nearest_pairs_cpu", [&] {
    const HostBatch hb(pos, cel, pt, "srd.nearest_pairs", static_cast<const scalar_t*>(nullptr));
    nearest_impl(hb, index.data_ptr<int64_t>(), shifts.data_ptr<int64_t>());
  });
  return {index, shifts};
}

}  // namespace

TORCH_LIBRARY_IMPL(srd, CPU, m) { m.impl("nearest_pairs", &nearest_pairs_cpu); }

}  // namespace srd
