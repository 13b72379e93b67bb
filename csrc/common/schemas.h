// The schemas of every op of the package, defined once: registration.cpp defines them for
// torch.ops.srd, and the CPU emulation of the CUDA kernels (cuda/selfcheck/emulation_ops.cpp) for its
// own namespace torch.ops.srd_emu, so that both take exactly the same arguments.
#pragma once

#include <torch/library.h>

namespace srd {

inline void define_op_schemas(torch::Library& m) {
  // EAD features of every atom of a batch of crystals, and the densities rho saved for backward.
  //   positions [N, 3] (Angstrom, Cartesian), numbers [N] int64, cells [B, 3, 3] (rows = lattice
  //   vectors), ptr [B + 1] int64 (atoms of crystal b are ptr[b]:ptr[b+1]).
  //   -> features [N, (lmax+1) * len(etas) * len(mus)] laid out [L][eta][mu],
  //      rho [N, 1 or 4, len(etas) * len(mus)]  (rho0, rho_x, rho_y, rho_z).
  m.def(
      "ead_forward(Tensor positions, Tensor numbers, Tensor cells, Tensor ptr, float[] etas, float[] mus, "
      "float cutoff, int lmax, bool cumulative, float skip_exponent) -> (Tensor, Tensor)");
  // Vector-Jacobian product of ead_forward: (dL/dpositions [N, 3], dL/dcells [B, 3, 3]).
  m.def(
      "ead_backward(Tensor grad_features, Tensor positions, Tensor numbers, Tensor cells, Tensor ptr, "
      "Tensor rho, float[] etas, float[] mus, float cutoff, int lmax, bool cumulative, float skip_exponent) "
      "-> (Tensor, Tensor)");
  // For every crystal, the closest pair over all periodic images: index [B, 2] (global atom ids
  // i <= j) and integer shifts [B, 3] such that d = pos[j] - pos[i] + shifts @ cell is shortest.
  m.def("nearest_pairs(Tensor positions, Tensor cells, Tensor ptr) -> (Tensor, Tensor)");
}

}  // namespace srd
