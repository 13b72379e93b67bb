// Host glue of the CUDA ops of the EAD descriptor (SPEC section 1): srd::ead_forward and
// srd::ead_backward (registered for the CUDA dispatch key in ead_cuda.cu). The device code is in
// ead_kernels.cuh / crystal_kernels.cuh (no torch there). This header is compiled by nvcc for the
// package and, unchanged, by the host compiler for the CPU emulation of the kernels (cuda/selfcheck,
// see crystal_cuda.cuh), so that the emulator runs exactly these entry points.
// Semantics of cpu/ead_cpu.cpp: float64 pair geometry for both dtypes, the same pair set (every image
// with 0 < r <= EADGrid::reach), the same skip rule (a term is kept iff eta (r - mu)^2 <= skip,
// evaluated in T with the (hi, lo) split of r and mu; EADGrid::window only bounds the loops), the same
// cutoff/Gaussian/feature expressions; rho accumulated in float64 for both dtypes (the CPU sums
// float32 lanes, so float32 results agree to float32 rounding, not bitwise).
//
// Launch plan (N centre atoms, B crystals, C = len(etas) * len(mus) channels, E = len(etas),
// M = len(mus); P = 256 pair slots per tile):
//   prepare_batch (crystal_cuda.cuh)  2 tiny kernels, 128 threads per block: cells (B threads) and
//                        atoms (N threads): cell inverse / plane spacings, wrapped positions (float64).
//   ead_forward_kernel   grid N blocks (one per centre atom); BD = max(64, roundup32(C / CPT)) threads,
//                        CPT = channels per thread = the smallest power of two with CPT * 256 >= C
//                        (default grid: C = 150 -> CPT = 1, BD = 160; C = 300 -> CPT = 2, BD = 160;
//                        C = 2048 -> CPT = 8, BD = 256). Dynamic shared memory
//                        32 P + 3 P sizeof(T) + 8 (M + E) + 4 E (P + 1) bytes (default grid: 17.4 kB in
//                        float64, 14.4 kB in float32; at most 31.2 kB) + 336 B static.
//   ead_backward_kernel  grid N blocks; 256 threads (one pair slot each). Dynamic shared memory
//                        80 P + 8 M + sizeof(T) (2 M + 4 C) + 4 (2 P + E + 2) + 2 C bytes (default grid:
//                        28.2 kB in float64, 25.4 kB in float32) + 1.1 kB static; above 48 kB (opted in
//                        with cudaFuncSetAttribute) only for large grids, 93 kB for 16 x 128 channels.
//   reduce kernels       N threads (positions) and B threads (cells), 128 per block.
//
// Work decomposition (TorchANI cuAEV style): the block of centre i enumerates the periodic images of
// every atom of i's crystal (crystal_kernels.cuh: enumerate_pairs), compacts them, in the CPU's
// (j, na, nb, nc) order, into a shared-memory tile of 256 pairs with a block-wide prefix sum (warp
// shuffles, no atomics), and then
//   forward:  prepares every slot once (the (hi, lo) split of |d|, Z_j f_c, and the window [lo, hi] of
//             each eta row, the device port of EADGrid::window) and lets thread t accumulate the channels it owns
//             (t, t + BD, ...) over the tile in float64 registers: the channel-parallel inner loop
//             needs neither atomics nor a reduction, and every channel sums its pairs in stream order;
//   backward: one thread per pair slot computes dL/dd over the centre's active channels (see below),
//             then a segmented reduction over equal-j runs of the tile (pairs are j-ordered) adds
//             the per-(i, j) sums to a per-centre partial buffer.
// Determinism: every sum has a fixed order that depends only on the input (stream order, fixed
// warp-shuffle trees, fixed-order reduction of the per-centre buffers); no floating-point atomics
// anywhere. Results are bitwise reproducible run to run and independent of the rest of the batch
// (each crystal's result does not depend on which crystals share the batch).
//
// Host synchronisation: none in the forward; one in the backward (the size of the per-centre partial
// buffer, sum over crystals of n_b^2 x 3 float64, is read back with .item()). Invalid inputs that only
// a value check can detect (singular cells, non-finite positions, malformed ptr) give NaN outputs;
// the Python wrappers check them before calling the ops.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>

#include <climits>
#include <cstdint>
#include <tuple>

#include "common/ead_grid.h"
#include "common/ead_grid_device.h"
#include "cuda/crystal_cuda.cuh"
#include "cuda/ead_kernels.cuh"

namespace srd {
namespace gpu {
namespace {

// Host: the DeviceGrid of an EADGrid, with a clear error when the grid exceeds the CUDA limits.
inline DeviceGrid make_device_grid(const EADGrid& g, const char* op) {
  TORCH_CHECK_VALUE(g.n_eta <= kMaxDeviceEtas, op, ": the CUDA kernels support at most ", kMaxDeviceEtas, " etas, got ",
                    g.n_eta, " (use CPU tensors for larger grids)");
  TORCH_CHECK_VALUE(g.n_mu <= kMaxDeviceMus, op, ": the CUDA kernels support at most ", kMaxDeviceMus, " mus, got ",
                    g.n_mu, " (use CPU tensors for larger grids)");
  TORCH_CHECK_VALUE(g.n_channels <= kMaxDeviceChannels, op, ": the CUDA kernels support at most ", kMaxDeviceChannels,
                    " channels len(etas) * len(mus), got ", g.n_channels, " (use CPU tensors for larger grids)");
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

template <typename T, bool WithL1, int CPT>
void launch_forward_cpt(const DeviceGrid& dg, const DeviceBatch& batch, const int64_t* numbers, T* features, T* rho,
                        int threads, Stream stream) {
  const size_t smem = forward_smem_bytes<T>(dg.n_eta, dg.n_mu);
  auto kernel = ead_forward_kernel<T, WithL1, CPT>;
  set_dynamic_smem(kernel, smem, "srd.ead");
  launch(kernel, batch.n_atoms, threads, smem, stream, dg, batch, numbers, features, rho);
}

template <typename T, bool WithL1>
void launch_forward(const DeviceGrid& dg, const DeviceBatch& batch, const int64_t* numbers, T* features, T* rho,
                    Stream stream) {
  int cpt, threads;
  forward_launch_shape(dg.n_channels, cpt, threads);
  switch (cpt) {
    case 1: launch_forward_cpt<T, WithL1, 1>(dg, batch, numbers, features, rho, threads, stream); break;
    case 2: launch_forward_cpt<T, WithL1, 2>(dg, batch, numbers, features, rho, threads, stream); break;
    case 4: launch_forward_cpt<T, WithL1, 4>(dg, batch, numbers, features, rho, threads, stream); break;
    default: launch_forward_cpt<T, WithL1, 8>(dg, batch, numbers, features, rho, threads, stream); break;
  }
}

template <typename T, bool WithL1>
void launch_backward(const DeviceGrid& dg, const DeviceBatch& batch, const int64_t* numbers, const T* grad_f,
                     const T* rho, const int64_t* poff, Acc* partial, Acc* partial_cell, T* grad_pos, T* grad_cell,
                     Stream stream) {
  const size_t smem = backward_smem_bytes<T>(dg.n_eta, dg.n_mu, dg.n_channels);
  auto kernel = ead_backward_kernel<T, WithL1>;
  set_dynamic_smem(kernel, smem, "srd.ead_backward");
  launch(kernel, batch.n_atoms, kBwdThreads, smem, stream, dg, batch, numbers, grad_f, rho, poff, partial,
         partial_cell);
  constexpr int kThreads = 128;
  launch(reduce_positions_kernel<T>, blocks_for(batch.n_atoms, kThreads), kThreads, 0, stream, batch, poff,
         static_cast<const Acc*>(partial), grad_pos);
  launch(reduce_cells_kernel<T>, blocks_for(batch.n_crystals, kThreads), kThreads, 0, stream, batch,
         static_cast<const Acc*>(partial_cell), grad_cell);
}

// ================================================================================================
// Host entry points
// ================================================================================================
inline void check_batch_shape(const char* op, int64_t N, int64_t B) {
  TORCH_CHECK_VALUE(B > 0 || N == 0, op, ": ptr must start at 0 and end at N = ", N,
                    ", got no crystals (ptr has one entry)");
  TORCH_CHECK_VALUE(N <= INT_MAX, op, ": the CUDA kernels support at most ", INT_MAX, " atoms, got ", N);
}

std::tuple<at::Tensor, at::Tensor> ead_forward_cuda(const at::Tensor& positions, const at::Tensor& numbers,
                                                    const at::Tensor& cells, const at::Tensor& ptr,
                                                    c10::ArrayRef<double> etas, c10::ArrayRef<double> mus,
                                                    double cutoff, int64_t lmax, bool cumulative,
                                                    double skip_exponent) {
  check_structure_args("srd.ead", positions, numbers, cells, ptr);
  const EADGrid grid(etas, mus, cutoff, lmax, cumulative, skip_exponent);
  const DeviceGrid dg = make_device_grid(grid, "srd.ead");
  const DeviceGuard guard(positions.device());
  const auto [pos, num, cel, pt, gf_, rh_] = contiguous_tensors(positions, numbers, cells, ptr);
  const int64_t N = pos.size(0), B = cel.size(0);
  at::Tensor features = at::empty({N, grid.n_features}, pos.options());
  at::Tensor rho = at::empty({N, grid.n_rho, grid.n_channels}, pos.options());
  if (N == 0) return {features, rho};
  check_batch_shape("srd.ead", N, B);
  const Stream stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "ead_forward_cuda", [&] {
    const PreparedBatch pb = prepare_batch<scalar_t>(pos, cel, pt, stream);
    if (lmax >= 1)
      launch_forward<scalar_t, true>(dg, pb.view, num.data_ptr<int64_t>(), features.data_ptr<scalar_t>(),
                                     rho.data_ptr<scalar_t>(), stream);
    else
      launch_forward<scalar_t, false>(dg, pb.view, num.data_ptr<int64_t>(), features.data_ptr<scalar_t>(),
                                      rho.data_ptr<scalar_t>(), stream);
  });
  return {features, rho};
}

std::tuple<at::Tensor, at::Tensor> ead_backward_cuda(const at::Tensor& grad_features, const at::Tensor& positions,
                                                     const at::Tensor& numbers, const at::Tensor& cells,
                                                     const at::Tensor& ptr, const at::Tensor& rho,
                                                     c10::ArrayRef<double> etas, c10::ArrayRef<double> mus,
                                                     double cutoff, int64_t lmax, bool cumulative,
                                                     double skip_exponent) {
  check_structure_args("srd.ead_backward", positions, numbers, cells, ptr);
  const EADGrid grid(etas, mus, cutoff, lmax, cumulative, skip_exponent);
  const DeviceGrid dg = make_device_grid(grid, "srd.ead_backward");
  check_backward_args("srd.ead_backward", grad_features, rho, positions, grid);
  const int64_t N = positions.size(0), B = cells.size(0);
  const DeviceGuard guard(positions.device());
  const auto [pos, num, cel, pt, gf, rh] = contiguous_tensors(positions, numbers, cells, ptr, grad_features, rho);
  at::Tensor grad_pos = at::zeros_like(pos);
  at::Tensor grad_cell = at::zeros_like(cel);
  if (N == 0) return {grad_pos, grad_cell};
  check_batch_shape("srd.ead_backward", N, B);
  const Stream stream = current_stream();
  // Offsets of the per-centre partial blocks: crystal b owns n_b x n_b x 3 float64 from 3 poff[b].
  const at::Tensor counts = pt.slice(0, 1, B + 1).sub(pt.slice(0, 0, B)).clamp_min(0);
  const at::Tensor sq = counts.mul(counts);
  const at::Tensor incl = sq.cumsum(0);
  const at::Tensor poff = incl.sub(sq).contiguous();
  const int64_t total = incl.select(0, B - 1).item<int64_t>();  // the one host synchronisation (buffer size)
  const auto acc_opt = pos.options().dtype(at::kDouble);
  at::Tensor partial = at::zeros({total * 3}, acc_opt);
  at::Tensor partial_cell = at::zeros({N * 9}, acc_opt);
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "ead_backward_cuda", [&] {
    const PreparedBatch pb = prepare_batch<scalar_t>(pos, cel, pt, stream);
    if (lmax >= 1)
      launch_backward<scalar_t, true>(dg, pb.view, num.data_ptr<int64_t>(), gf.data_ptr<scalar_t>(),
                                      rh.data_ptr<scalar_t>(), poff.data_ptr<int64_t>(), partial.data_ptr<double>(),
                                      partial_cell.data_ptr<double>(), grad_pos.data_ptr<scalar_t>(),
                                      grad_cell.data_ptr<scalar_t>(), stream);
    else
      launch_backward<scalar_t, false>(dg, pb.view, num.data_ptr<int64_t>(), gf.data_ptr<scalar_t>(),
                                       rh.data_ptr<scalar_t>(), poff.data_ptr<int64_t>(), partial.data_ptr<double>(),
                                       partial_cell.data_ptr<double>(), grad_pos.data_ptr<scalar_t>(),
                                       grad_cell.data_ptr<scalar_t>(), stream);
  });
  return {grad_pos, grad_cell};
}

}  // namespace
}  // namespace gpu
}  // namespace srd
