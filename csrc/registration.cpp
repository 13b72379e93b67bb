// The one TORCH_LIBRARY(srd, m) block: every schema of the package lives here. Kernels register
// themselves next to their code (TORCH_LIBRARY_IMPL(srd, CPU, m) in cpu/*.cpp and
// TORCH_LIBRARY_IMPL(srd, CUDA, m) in cuda/*.cu), so a CPU-only build simply has no CUDA kernels.
// Fake (meta) kernels and autograd are registered in python/srd/ops.py.
#include <pybind11/pybind11.h>
#include <torch/library.h>

TORCH_LIBRARY(srd, m) {
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

// An (otherwise empty) Python module so that `import srd._C` loads the library and runs the
// registrations above. No function here takes tensors: everything goes through torch.ops.srd.
PYBIND11_MODULE(_C, m) { m.doc() = "srd C++/CUDA kernels; the ops live in torch.ops.srd"; }
