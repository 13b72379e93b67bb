// The CUDA kernels of srd run on the CPU through cuda_emulation.h, exposed as torch.ops.srd_emu.*
// with the schemas of torch.ops.srd.* (CPU tensors in and out). The host glue mirrors
// cuda/ead_cuda.cu and cuda/neighbors_cuda.cu (same launch shapes, shared-memory sizes, buffers and
// kernel order). Built and used by selfcheck.py; not part of the package.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/ead_grid.h"
// clang-format off
#include "cuda/selfcheck/cuda_emulation.h"  // after torch, before the kernels
#include "cuda/ead_kernels.cuh"
#include "cuda/neighbors_kernels.cuh"
// clang-format on

namespace srd {
namespace gpu {
namespace {

unsigned char* dynamic_smem() { return emu::smem(); }

DeviceGrid make_grid(const EADGrid& g) {
  TORCH_CHECK(g.n_eta <= kMaxDeviceEtas && g.n_mu <= kMaxDeviceMus && g.n_channels <= kMaxDeviceChannels,
              "grid too large for the CUDA kernels");
  DeviceGrid d;
  d.n_eta = static_cast<int>(g.n_eta);
  d.n_mu = static_cast<int>(g.n_mu);
  d.n_channels = static_cast<int>(g.n_channels);
  d.uniform = g.uniform ? 1 : 0;
  d.mu0 = g.mu0;
  d.dmu = g.dmu;
  d.cutoff = g.cutoff;
  d.reach = g.reach;
  d.skip = g.skip;
  d.lmax = static_cast<int>(g.lmax);
  d.cumulative = g.cumulative ? 1 : 0;
  for (int e = 0; e < kMaxDeviceEtas; ++e) {
    d.eta[e] = e < d.n_eta ? g.etas[e] : 0.0;
    d.halfwidth[e] = e < d.n_eta ? g.halfwidth[e] : 0.0;
  }
  for (int k = 0; k < kMaxDeviceMus; ++k) d.mu[k] = k < d.n_mu ? g.mus[k] : 0.0;
  return d;
}

struct Prepared {
  at::Tensor cells, ok, wrapped, frac, offset, crystal;
  DeviceBatch view;
};

template <typename T>
Prepared prepare(const at::Tensor& pos, const at::Tensor& cel, const at::Tensor& pt) {
  const int64_t N = pos.size(0), B = cel.size(0);
  Prepared p;
  p.cells = at::empty({B * static_cast<int64_t>(sizeof(Cell<double>))}, at::kByte);
  p.ok = at::empty({B}, at::kInt);
  p.wrapped = at::empty({N, 3}, at::kDouble);
  p.frac = at::empty({N, 3}, at::kDouble);
  p.offset = at::empty({N, 3}, at::kLong);
  p.crystal = at::empty({N}, at::kInt);
  Cell<double>* cells_d = reinterpret_cast<Cell<double>*>(p.cells.data_ptr());
  const T* h = cel.data_ptr<T>();
  const T* x = pos.data_ptr<T>();
  const int64_t* ptr = pt.data_ptr<int64_t>();
  int* ok = p.ok.data_ptr<int>();
  double* wr = p.wrapped.data_ptr<double>();
  double* fr = p.frac.data_ptr<double>();
  int64_t* of = p.offset.data_ptr<int64_t>();
  int* cr = p.crystal.data_ptr<int>();
  emu::launch((B + 127) / 128, 128, 0, [&] { prep_cells_kernel<T>(h, B, cells_d, ok); });
  emu::launch((N + 127) / 128, 128, 0,
              [&] { prep_atoms_kernel<T>(x, ptr, N, B, cells_d, ok, wr, fr, of, cr); });
  p.view.cells = cells_d;
  p.view.ok = ok;
  p.view.wrapped = wr;
  p.view.frac = fr;
  p.view.offset = of;
  p.view.crystal = cr;
  p.view.ptr = ptr;
  p.view.n_atoms = N;
  p.view.n_crystals = B;
  return p;
}

template <typename T, bool L1>
void forward(const DeviceGrid& dg, const DeviceBatch& v, const int64_t* num, T* f, T* rho) {
  int cpt, threads;
  forward_launch_shape(dg.n_channels, cpt, threads);
  const size_t smem = forward_smem_bytes<T>(dg.n_eta, dg.n_mu);
  emu::launch(v.n_atoms, threads, smem, [&] {
    switch (cpt) {
      case 1: ead_forward_kernel<T, L1, 1>(dg, v, num, f, rho); break;
      case 2: ead_forward_kernel<T, L1, 2>(dg, v, num, f, rho); break;
      case 4: ead_forward_kernel<T, L1, 4>(dg, v, num, f, rho); break;
      default: ead_forward_kernel<T, L1, 8>(dg, v, num, f, rho); break;
    }
  });
}

std::tuple<at::Tensor, at::Tensor> ead_forward_emu(const at::Tensor& positions, const at::Tensor& numbers,
                                                   const at::Tensor& cells, const at::Tensor& ptr,
                                                   c10::ArrayRef<double> etas, c10::ArrayRef<double> mus,
                                                   double cutoff, int64_t lmax, bool cumulative, double skip) {
  check_structure_args("srd.ead", positions, numbers, cells, ptr);
  const EADGrid grid(etas, mus, cutoff, lmax, cumulative, skip);
  const DeviceGrid dg = make_grid(grid);
  const at::Tensor pos = positions.contiguous(), num = numbers.contiguous(), cel = cells.contiguous(),
                   pt = ptr.contiguous();
  const int64_t N = pos.size(0), n_rho = lmax >= 1 ? 4 : 1;
  at::Tensor features = at::empty({N, grid.n_features}, pos.options());
  at::Tensor rho = at::empty({N, n_rho, grid.n_channels}, pos.options());
  if (N == 0) return {features, rho};
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "ead_forward_emu", [&] {
    const Prepared p = prepare<scalar_t>(pos, cel, pt);
    if (lmax >= 1)
      forward<scalar_t, true>(dg, p.view, num.data_ptr<int64_t>(), features.data_ptr<scalar_t>(),
                              rho.data_ptr<scalar_t>());
    else
      forward<scalar_t, false>(dg, p.view, num.data_ptr<int64_t>(), features.data_ptr<scalar_t>(),
                               rho.data_ptr<scalar_t>());
  });
  return {features, rho};
}

std::tuple<at::Tensor, at::Tensor> ead_backward_emu(const at::Tensor& grad_features, const at::Tensor& positions,
                                                    const at::Tensor& numbers, const at::Tensor& cells,
                                                    const at::Tensor& ptr, const at::Tensor& rho,
                                                    c10::ArrayRef<double> etas, c10::ArrayRef<double> mus,
                                                    double cutoff, int64_t lmax, bool cumulative, double skip) {
  check_structure_args("srd.ead_backward", positions, numbers, cells, ptr);
  const EADGrid grid(etas, mus, cutoff, lmax, cumulative, skip);
  const DeviceGrid dg = make_grid(grid);
  const at::Tensor pos = positions.contiguous(), num = numbers.contiguous(), cel = cells.contiguous(),
                   pt = ptr.contiguous(), gf = grad_features.contiguous().to(positions.scalar_type()),
                   rh = rho.contiguous().to(positions.scalar_type());
  const int64_t N = pos.size(0), B = cel.size(0);
  at::Tensor grad_pos = at::zeros_like(pos);
  at::Tensor grad_cell = at::zeros_like(cel);
  if (N == 0) return {grad_pos, grad_cell};
  const at::Tensor counts = pt.slice(0, 1, B + 1).sub(pt.slice(0, 0, B)).clamp_min(0);
  const at::Tensor sq = counts.mul(counts);
  const at::Tensor incl = sq.cumsum(0);
  const at::Tensor poff = incl.sub(sq).contiguous();
  const int64_t total = incl.select(0, B - 1).item<int64_t>();
  at::Tensor partial = at::zeros({total * 3}, at::kDouble);
  at::Tensor partial_cell = at::zeros({N * 9}, at::kDouble);
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "ead_backward_emu", [&] {
    using T = scalar_t;
    const Prepared p = prepare<T>(pos, cel, pt);
    const DeviceBatch& v = p.view;
    const int64_t* nm = num.data_ptr<int64_t>();
    const T* g = gf.data_ptr<T>();
    const T* r = rh.data_ptr<T>();
    const int64_t* po = poff.data_ptr<int64_t>();
    double* pa = partial.data_ptr<double>();
    double* pc = partial_cell.data_ptr<double>();
    const size_t smem = backward_smem_bytes<T>(dg.n_eta, dg.n_mu, dg.n_channels);
    emu::launch(N, kBwdThreads, smem, [&] {
      if (lmax >= 1)
        ead_backward_kernel<T, true>(dg, v, nm, g, r, po, pa, pc);
      else
        ead_backward_kernel<T, false>(dg, v, nm, g, r, po, pa, pc);
    });
    T* gp = grad_pos.data_ptr<T>();
    T* gc = grad_cell.data_ptr<T>();
    emu::launch((N + 127) / 128, 128, 0, [&] { reduce_positions_kernel<T>(v, po, pa, gp); });
    emu::launch((B + 127) / 128, 128, 0, [&] { reduce_cells_kernel<T>(v, pc, gc); });
  });
  return {grad_pos, grad_cell};
}

std::tuple<at::Tensor, at::Tensor> nearest_pairs_emu(const at::Tensor& positions, const at::Tensor& cells,
                                                     const at::Tensor& ptr) {
  check_structure_args("srd.nearest_pairs", positions, at::Tensor(), cells, ptr);
  const at::Tensor pos = positions.contiguous(), cel = cells.contiguous(), pt = ptr.contiguous();
  const int64_t B = cel.size(0);
  at::Tensor index = at::empty({B, 2}, at::kLong);
  at::Tensor shifts = at::empty({B, 3}, at::kLong);
  if (B == 0) return {index, shifts};
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "nearest_pairs_emu", [&] {
    const Prepared p = prepare<scalar_t>(pos, cel, pt);
    int64_t* ix = index.data_ptr<int64_t>();
    int64_t* sh = shifts.data_ptr<int64_t>();
    emu::launch(B, kNearestThreads, 0, [&] { nearest_kernel(p.view, ix, sh); });
  });
  return {index, shifts};
}

}  // namespace
}  // namespace gpu
}  // namespace srd

TORCH_LIBRARY(srd_emu, m) {
  m.def(
      "ead_forward(Tensor positions, Tensor numbers, Tensor cells, Tensor ptr, float[] etas, float[] mus, "
      "float cutoff, int lmax, bool cumulative, float skip_exponent) -> (Tensor, Tensor)");
  m.def(
      "ead_backward(Tensor grad_features, Tensor positions, Tensor numbers, Tensor cells, Tensor ptr, "
      "Tensor rho, float[] etas, float[] mus, float cutoff, int lmax, bool cumulative, float skip_exponent) "
      "-> (Tensor, Tensor)");
  m.def("nearest_pairs(Tensor positions, Tensor cells, Tensor ptr) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(srd_emu, CPU, m) {
  m.impl("ead_forward", &srd::gpu::ead_forward_emu);
  m.impl("ead_backward", &srd::gpu::ead_backward_emu);
  m.impl("nearest_pairs", &srd::gpu::nearest_pairs_emu);
}
