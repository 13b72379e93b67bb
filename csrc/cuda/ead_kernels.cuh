// Device code of the EAD descriptor on CUDA (no torch: the host glue is ead_cuda.cuh). See the
// comment at the top of ead_cuda.cuh for the launch plan, and common/ead_pair.h for the per-pair
// maths, which these kernels share with the CPU kernels (cpu/ead_cpu.cpp).
#pragma once

#include <climits>
#include <cstddef>
#include <cstdint>

#include "common/ead_grid_device.h"
#include "common/ead_math.h"
#include "common/ead_pair.h"
#include "cuda/crystal_kernels.cuh"

namespace srd {
namespace gpu {
namespace {

// rho, the feature expressions and the gradient scatter are accumulated in float64 for both input
// dtypes, like the CPU kernels: a centre sums thousands of terms per channel.
using Acc = double;

// ================================================================================================
// Forward
// ================================================================================================
constexpr int kFwdTile = 256;        // pair slots per tile
constexpr int kFwdMaxThreads = 256;  // BD <= 256 (C <= 2048 with CPT <= 8)

// Launch shape of the forward for C channels: CPT channels per thread (a power of two, C <= 2048
// gives CPT <= 8) and BD threads (a multiple of 32, 64 <= BD <= 256).
inline void forward_launch_shape(int C, int& cpt, int& threads) {
  cpt = 1;
  while (cpt * kFwdMaxThreads < C) cpt *= 2;
  threads = (C + cpt - 1) / cpt;
  threads = ((threads + 31) / 32) * 32;
  if (threads < 64) threads = 64;
}

template <typename T>
size_t forward_smem_bytes(int E, int M) {
  return sizeof(double) * 4 * kFwdTile + sizeof(T) * 3 * kFwdTile + sizeof(double) * (M + E) +
         sizeof(unsigned) * E * (kFwdTile + 1);
}

// The Gaussian of every term is computed as on the CPU (common/ead_pair.h): t = (r_hi - mu_hi) + (r_lo - mu_lo) with
// (hi, lo) the split of the float64 r and mu into T (lo = 0 in float64), arg = eta t^2, the term kept
// iff arg <= skip, w = Z_j f_c(r_hi) exp(-arg) in T; then accumulated in float64.
// (__launch_bounds__ minBlocks = 1: without it ptxas for sm_90 caps the CPT = 1 and 4 variants at 64 /
// 80 registers and spills 40-76 bytes; with it they use 74-96 registers and spill nothing.)
template <typename T, bool WithL1, int CPT>
__global__ void __launch_bounds__(kFwdMaxThreads, 1)
    ead_forward_kernel(const __grid_constant__ DeviceGrid grid, const DeviceBatch batch,
                       const int64_t* __restrict__ numbers, T* __restrict__ features, T* __restrict__ rho) {
  constexpr int P = kFwdTile;
  unsigned char* smem = dynamic_smem();
  __shared__ CentreGeom g;
  __shared__ int s_scan[32];
  const int E = grid.n_eta, M = grid.n_mu, C = grid.n_channels;
  double* s_d = reinterpret_cast<double*>(smem);            // [3][P] d = r_j + n H - r_i
  double* s_r = s_d + 3 * P;                                // [P] |d|, or -1 for a hole
  double* s_mu = s_r + P;                                   // [M]
  double* s_hw = s_mu + M;                                  // [E] halfwidths sqrt(skip / eta)
  T* s_rhi = reinterpret_cast<T*>(s_hw + E);                // [P] (T) r
  T* s_rlo = s_rhi + P;                                     // [P] (T) (r - r_hi)
  T* s_zf = s_rlo + P;                                      // [P] Z_j, then Z_j f_c(r_hi)
  unsigned* s_win = reinterpret_cast<unsigned*>(s_zf + P);  // [E][P + 1] window lo | (hi + 1) << 16

  const int64_t i = blockIdx.x;
  const int tid = threadIdx.x, BD = blockDim.x;
  const T trc = static_cast<T>(grid.cutoff);
  const T skip = static_cast<T>(grid.skip);  // inf stays inf
  constexpr int n_rho = WithL1 ? 4 : 1;
  const int64_t F = (WithL1 ? 2 : 1) * static_cast<int64_t>(C);

  if (tid == 0) setup_centre(batch, i, grid.reach, g);
  for (int k = tid; k < M; k += BD) s_mu[k] = grid.mu[k];
  for (int e = tid; e < E; e += BD) s_hw[e] = grid.halfwidth[e];
  __syncthreads();
  if (!g.valid) {  // block-uniform
    const T nan = quiet_nan<T>();
    for (int64_t c = tid; c < F; c += BD) features[i * F + c] = nan;
    for (int64_t c = tid; c < n_rho * C; c += BD) rho[i * n_rho * C + c] = nan;
    return;
  }
  accumulate_centre_box(batch, g);

  // The channels of this thread: c = tid + q BD, q < CPT (row e = c / M, centre k = c % M).
  int kq[CPT], eq[CPT];
  T etaq[CPT], mhq[CPT], mlq[CPT];
  Acc a0[CPT], ax[CPT], ay[CPT], az[CPT];
#pragma unroll
  for (int q = 0; q < CPT; ++q) {
    const int c = tid + q * BD;
    const int cc = c < C ? c : 0;
    eq[q] = cc / M;
    const int k = cc - eq[q] * M;
    kq[q] = c < C ? k : INT_MAX;  // INT_MAX: never inside a window
    etaq[q] = static_cast<T>(grid.eta[eq[q]]);
    split_hi_lo(grid.mu[k], mhq[q], mlq[q]);
    a0[q] = ax[q] = ay[q] = az[q] = Acc(0);
  }
  __syncthreads();  // the image box

  auto write = [&](int slot, int jl, int, int, int, const double* d, double r2) {
    const bool keep = r2 <= g.r2max && r2 > 0.0;
    s_d[slot] = d[0];
    s_d[P + slot] = d[1];
    s_d[2 * P + slot] = d[2];
    s_r[slot] = keep ? sqrt(r2) : -1.0;
    s_zf[slot] = static_cast<T>(numbers[g.first + jl]);
  };
  auto process = [&](int fill) {
    // Per slot, once: the (hi, lo) split of r, Z_j f_c and the window of every eta row.
    for (int p = tid; p < fill; p += BD) {
      const double r = s_r[p];
      if (r >= 0.0) {
        T hi, lo, zf, zdf;
        split_hi_lo(r, hi, lo);
        s_rhi[p] = hi;
        s_rlo[p] = lo;
        weighted_cutoff(s_zf[p], hi, trc, zf, zdf);
        s_zf[p] = zf;
        for (int e = 0; e < E; ++e) {
          int lo, hk;
          device_window(s_hw[e], s_mu, M, grid.uniform != 0, grid.mu0, grid.dmu, r, lo, hk);
          s_win[e * (P + 1) + p] = static_cast<unsigned>(lo) | (static_cast<unsigned>(hk + 1) << 16);
        }
      }
    }
    __syncthreads();
    // Channel-parallel accumulation over the tile, in stream order.
    for (int p = 0; p < fill; ++p) {
      if (s_r[p] < 0.0) continue;  // hole (block-uniform)
      const T rhi = s_rhi[p], rlo = s_rlo[p], zf = s_zf[p];
      const double dx = s_d[p], dy = s_d[P + p], dz = s_d[2 * P + p];
#pragma unroll
      for (int q = 0; q < CPT; ++q) {
        const unsigned wv = s_win[eq[q] * (P + 1) + p];
        const int lo = static_cast<int>(wv & 0xffffu), hi = static_cast<int>(wv >> 16) - 1;
        if (kq[q] >= lo && kq[q] <= hi) {
          const T arg = gaussian_exponent(etaq[q], gaussian_offset(rhi, rlo, mhq[q], mlq[q]));
          if (term_kept(arg, skip)) {
            const Acc w = static_cast<Acc>(pair_weight(exp_fast(-arg), zf));
            a0[q] += w;
            if constexpr (WithL1) {
              ax[q] += w * dx;
              ay[q] += w * dy;
              az[q] += w * dz;
            }
          }
        }
      }
    }
  };
  enumerate_pairs<P>(g, batch, s_scan, write, process);

  // Features and the saved rho (the CPU's expressions).
  T* f = features + i * F;
  T* rr = rho + i * n_rho * C;
  const Acc inv_rc2 = inverse_cutoff_squared(grid.cutoff);
  const Acc a = cumulative_weight(grid.cumulative != 0);
#pragma unroll
  for (int q = 0; q < CPT; ++q) {
    const int c = tid + q * BD;
    if (c >= C) continue;
    const Acc r0 = a0[q];
    f[c] = static_cast<T>(feature_l0(r0));
    rr[c] = static_cast<T>(r0);
    if constexpr (WithL1) {
      const Acc vx = ax[q], vy = ay[q], vz = az[q];
      f[C + c] = static_cast<T>(feature_l1(r0, vx, vy, vz, a, inv_rc2));
      rr[C + c] = static_cast<T>(vx);
      rr[2 * C + c] = static_cast<T>(vy);
      rr[3 * C + c] = static_cast<T>(vz);
    }
  }
}

// ================================================================================================
// Backward
//
// Upstream gradients of centre i: G0 = dL/dF0, G1 = dL/dF1 (per channel c = (eta, mu)). With
// F0 = rho0^2 and F1 = (a rho0^2 + |rho_vec|^2) / rc^2 (a = 1 cumulative, 0 separate):
//   A0_c = dL/drho0_c = 2 rho0_c (G0_c + a G1_c / rc^2),      A_c = dL/drho_vec_c = 2 rho_vec_c G1_c / rc^2.
// Channels with G0 = G1 = 0 have A = 0 and are dropped: the block compacts the active channels of
// its centre (in channel order, prefix sum) into shared memory; a centre without any is skipped.
// Every pair (j, n) of i, d = r_j + n H - r_i, r = |d|, contributes to channel c
//   rho0_c += w_c(r),   rho_vec_c += w_c(r) d,   w_c(r) = Z_j g_c(r) f_c(r),  g_c = exp(-eta (r - mu)^2),
// so that, with w'_c(r) = Z_j g_c (f_c' - 2 eta (r - mu) f_c),
//   dL/dd = [ sum_c (A0_c + A_c . d) w'_c ] d / r  +  sum_c w_c A_c                       (3-vector)
// (sums over the active channels inside the pair's skip window, as in the forward). Since
// d = pos_j - pos_i + s H with s the integer shift relative to the unwrapped input positions,
//   dL/dpos_j += dL/dd,   dL/dpos_i -= dL/dd,   dL/dH += s (x) dL/dd   (H rows = lattice vectors).
//
// Deterministic scatter: thread p of the block computes dL/dd of tile slot p. The pair stream is
// ordered by j, so equal-j slots form runs; a prefix sum of the run heads numbers the runs, warp w
// sums runs w, w + 8, ... (lane-strided partial sums, then a fixed shuffle tree) and adds the run
// total to partial[i, j] (float64, global; tiles are separated by barriers, so these read-modify-
// writes are ordered). The -sum dL/dd for pos_i and the cell term are per-thread float64 registers
// reduced over the block by a fixed tree at the end. A second pair of kernels sums, in centre order,
//   dL/dpos_j = sum_{i in crystal(j)} partial[i, j],    dL/dH_b = sum_{i in b} partial_cell[i].
// partial holds sum_b n_b^2 x 3 float64 (n_b atoms of crystal b), partial_cell N x 9.
// ================================================================================================
constexpr int kBwdThreads = 256;  // = pair slots per tile
constexpr int kBwdWarps = kBwdThreads / 32;

template <typename T>
size_t backward_smem_bytes(int E, int M, int C) {
  constexpr int P = kBwdThreads;
  return sizeof(double) * (10 * P + M)        // s_s, s_gd, s_d, s_r, s_mu
         + sizeof(T) * (2 * M + 4 * C)        // s_mh, s_ml, s_a0, s_ax, s_ay, s_az
         + sizeof(int) * (P + P + 1 + E + 1)  // s_j, s_seg, s_row
         + sizeof(short) * C;                 // s_ak
}

template <typename T, bool WithL1>
__global__ void __launch_bounds__(kBwdThreads)
    ead_backward_kernel(const __grid_constant__ DeviceGrid grid, const DeviceBatch batch,
                        const int64_t* __restrict__ numbers, const T* __restrict__ grad_f, const T* __restrict__ rho,
                        const int64_t* __restrict__ poff, Acc* __restrict__ partial, Acc* __restrict__ partial_cell) {
  constexpr int P = kBwdThreads;
  unsigned char* smem = dynamic_smem();
  __shared__ CentreGeom g;
  __shared__ int s_scan[32];
  __shared__ Acc s_red[kBwdWarps][12];
  const int E = grid.n_eta, M = grid.n_mu, C = grid.n_channels;
  Acc* s_s = reinterpret_cast<Acc*>(smem);   // [3][P] integer shift s (exact in float64)
  Acc* s_gd = s_s + 3 * P;                   // [3][P] dL/dd
  double* s_d = s_gd + 3 * P;                // [3][P] d
  double* s_r = s_d + 3 * P;                 // [P] |d|, or -1 for a hole
  double* s_mu = s_r + P;                    // [M]
  T* s_mh = reinterpret_cast<T*>(s_mu + M);  // [M] (hi, lo) split of mu
  T* s_ml = s_mh + M;                        // [M]
  T* s_a0 = s_ml + M;                        // [C] active channels: A0, A_x, A_y, A_z
  T* s_ax = s_a0 + C;
  T* s_ay = s_ax + C;
  T* s_az = s_ay + C;
  int* s_j = reinterpret_cast<int*>(s_az + C);            // [P] j - first
  int* s_seg = s_j + P;                                   // [P + 1] run starts
  int* s_row = s_seg + P + 1;                             // [E + 1] first active channel of each eta row
  short* s_ak = reinterpret_cast<short*>(s_row + E + 1);  // [C] mu index k of each active channel

  const int64_t i = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const T trc = static_cast<T>(grid.cutoff);
  const T skip = static_cast<T>(grid.skip);
  constexpr int n_rho = WithL1 ? 4 : 1;
  const int64_t F = (WithL1 ? 2 : 1) * static_cast<int64_t>(C);
  const Acc inv_rc2 = inverse_cutoff_squared(grid.cutoff);
  const Acc a_cum = cumulative_weight(grid.cumulative != 0);

  if (tid == 0) setup_centre(batch, i, grid.reach, g);
  for (int k = tid; k < M; k += P) {
    const double mu = grid.mu[k];
    s_mu[k] = mu;
    split_hi_lo(mu, s_mh[k], s_ml[k]);
  }
  __syncthreads();
  const int b = batch.crystal[i];
  if (!g.valid) {  // block-uniform: NaN into this centre's cell block and, when addressable, its row
    const Acc nan = quiet_nan<Acc>();
    if (tid < 9) partial_cell[i * 9 + tid] = nan;
    const int64_t first = batch.ptr[b], last = batch.ptr[b + 1];
    if (first >= 0 && first <= i && i < last && last <= batch.n_atoms) {
      const int64_t n = last - first;
      Acc* row = partial + (poff[b] + (i - first) * n) * 3;
      for (int64_t k = tid; k < 3 * n; k += P) row[k] = nan;
    }
    return;
  }
  const int64_t row = poff[b] + (i - g.first) * g.n;  // partial[(row + j - first) * 3 + k]

  // ---- active channels of this centre, compacted in channel order (the CPU's A values) ----
  const T* gf = grad_f + i * F;
  const T* rr = rho + i * n_rho * C;
  int m = 0;  // block-uniform count
  for (int c0 = 0; c0 < C; c0 += P) {
    const int c = c0 + tid;
    double g0 = 0, g1 = 0;
    bool act = false;
    if (c < C) {
      g0 = static_cast<double>(gf[c]);
      g1 = WithL1 ? static_cast<double>(gf[C + c]) : 0.0;
      act = !(g0 == 0.0 && g1 == 0.0);
    }
    int n_act;
    const int pos = block_exclusive_scan(act ? 1 : 0, s_scan, n_act);
    if (c < C && c % M == 0) s_row[c / M] = m + pos;
    if (act) {
      const int q = m + pos;
      const double r0 = static_cast<double>(rr[c]);
      s_ak[q] = static_cast<short>(c % M);
      s_a0[q] = static_cast<T>(adjoint_rho0(r0, g0, g1, a_cum, inv_rc2));
      if constexpr (WithL1) {
        s_ax[q] = static_cast<T>(adjoint_rho_vec(static_cast<double>(rr[C + c]), g1, inv_rc2));
        s_ay[q] = static_cast<T>(adjoint_rho_vec(static_cast<double>(rr[2 * C + c]), g1, inv_rc2));
        s_az[q] = static_cast<T>(adjoint_rho_vec(static_cast<double>(rr[3 * C + c]), g1, inv_rc2));
      }
    }
    m += n_act;
  }
  if (tid == 0) s_row[E] = m;
  if (m == 0) return;  // block-uniform: no gradient reaches this atom's features (partials stay 0)
  accumulate_centre_box(batch, g);
  __syncthreads();  // s_row, active channels, image box

  Acc tot[3] = {0, 0, 0};                    // sum of dL/dd over this thread's slots
  Acc cel[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};  // sum of s (x) dL/dd

  auto write = [&](int slot, int jl, int na, int nb, int nc, const double* d, double r2) {
    const bool keep = r2 <= g.r2max && r2 > 0.0;
    s_d[slot] = d[0];
    s_d[P + slot] = d[1];
    s_d[2 * P + slot] = d[2];
    s_r[slot] = keep ? sqrt(r2) : -1.0;
    s_j[slot] = jl;
    const int64_t* oj = batch.offset + 3 * (g.first + jl);
    s_s[slot] = static_cast<Acc>(na + g.oi[0] - oj[0]);
    s_s[P + slot] = static_cast<Acc>(nb + g.oi[1] - oj[1]);
    s_s[2 * P + slot] = static_cast<Acc>(nc + g.oi[2] - oj[2]);
  };
  auto process = [&](int fill) {
    const int p = tid;
    if (p < fill) {
      Acc gd[3] = {0, 0, 0};
      const double r = s_r[p];
      if (r >= 0.0) {  // not a hole
        T rhi, rlo, zf, zdf;
        split_hi_lo(r, rhi, rlo);
        weighted_cutoff(static_cast<T>(numbers[g.first + s_j[p]]), rhi, trc, zf, zdf);
        const T dx = static_cast<T>(s_d[p]), dy = static_cast<T>(s_d[P + p]), dz = static_cast<T>(s_d[2 * P + p]);
        T sc = 0, vx = 0, vy = 0, vz = 0;
        for (int e = 0; e < E; ++e) {
          const int mb = s_row[e], me = s_row[e + 1];
          if (mb == me) continue;
          int lo, hi;
          device_window(grid.halfwidth[e], s_mu, M, grid.uniform != 0, grid.mu0, grid.dmu, r, lo, hi);
          // Active channels of row e with lo <= k <= hi (s_ak ascending within the row).
          int qb = mb, qe = me;
          while (qb < qe) {
            const int mid = (qb + qe) >> 1;
            if (s_ak[mid] < lo) qb = mid + 1;
            else qe = mid;
          }
          int qa = qb;
          qe = me;
          while (qa < qe) {
            const int mid = (qa + qe) >> 1;
            if (s_ak[mid] <= hi) qa = mid + 1;
            else qe = mid;
          }
          qe = qa;
          const T eta = static_cast<T>(grid.eta[e]);
          const T two_eta = 2 * eta;
          for (int q = qb; q < qe; ++q) {
            const int k = s_ak[q];
            const T t = gaussian_offset(rhi, rlo, s_mh[k], s_ml[k]);
            const T arg = gaussian_exponent(eta, t);
            if (!term_kept(arg, skip)) continue;
            const T gg = exp_fast(-arg);
            const T w = pair_weight(gg, zf);
            const T dw = pair_weight_derivative(gg, zf, zdf, two_eta, t);
            if constexpr (WithL1) {
              const T qx = s_ax[q], qy = s_ay[q], qz = s_az[q];
              sc += adjoint_along(s_a0[q], qx, qy, qz, dx, dy, dz) * dw;
              vx += w * qx;
              vy += w * qy;
              vz += w * qz;
            } else {
              sc += s_a0[q] * dw;
            }
          }
        }
        const double inv_r = 1.0 / r;
        gd[0] = pair_gradient(sc, dx, inv_r, vx);
        gd[1] = pair_gradient(sc, dy, inv_r, vy);
        gd[2] = pair_gradient(sc, dz, inv_r, vz);
        for (int k = 0; k < 3; ++k) tot[k] += gd[k];
        for (int a = 0; a < 3; ++a) {
          const Acc sa = s_s[a * P + p];
          if (sa == Acc(0)) continue;
          for (int k = 0; k < 3; ++k) cel[3 * a + k] += sa * gd[k];
        }
      }
      s_gd[p] = gd[0];
      s_gd[P + p] = gd[1];
      s_gd[2 * P + p] = gd[2];
    }
    // Runs of equal j (the stream is j-ordered): number them, then one warp per run.
    const bool head = p < fill && (p == 0 || s_j[p] != s_j[p - 1]);
    int n_runs;
    const int run = block_exclusive_scan(head ? 1 : 0, s_scan, n_runs);  // its barriers publish s_gd
    if (head) s_seg[run] = p;
    if (tid == 0) s_seg[n_runs] = fill;
    __syncthreads();
    for (int sg = warp; sg < n_runs; sg += kBwdWarps) {
      const int beg = s_seg[sg], end = s_seg[sg + 1];
      Acc x0 = 0, x1 = 0, x2 = 0;
      for (int q = beg + lane; q < end; q += 32) {
        x0 += s_gd[q];
        x1 += s_gd[P + q];
        x2 += s_gd[2 * P + q];
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        x0 += __shfl_down_sync(0xffffffffu, x0, o);
        x1 += __shfl_down_sync(0xffffffffu, x1, o);
        x2 += __shfl_down_sync(0xffffffffu, x2, o);
      }
      if (lane == 0) {
        Acc* dst = partial + (row + s_j[beg]) * 3;
        dst[0] += x0;
        dst[1] += x1;
        dst[2] += x2;
      }
    }
  };
  enumerate_pairs<P>(g, batch, s_scan, write, process);

  // Block reduction (fixed tree) of sum dL/dd (-> -pos_i) and the cell term.
  Acc v[12];
  for (int k = 0; k < 3; ++k) v[k] = tot[k];
  for (int k = 0; k < 9; ++k) v[3 + k] = cel[k];
#pragma unroll
  for (int k = 0; k < 12; ++k) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v[k] += __shfl_down_sync(0xffffffffu, v[k], o);
  }
  if (lane == 0)
    for (int k = 0; k < 12; ++k) s_red[warp][k] = v[k];
  __syncthreads();
  if (tid == 0) {
    Acc sum[12];
    for (int k = 0; k < 12; ++k) sum[k] = s_red[0][k];
    for (int w = 1; w < kBwdWarps; ++w)
      for (int k = 0; k < 12; ++k) sum[k] += s_red[w][k];
    for (int k = 0; k < 9; ++k) partial_cell[i * 9 + k] = sum[3 + k];
    Acc* di = partial + (row + (i - g.first)) * 3;
    for (int k = 0; k < 3; ++k) di[k] -= sum[k];
  }
}

// dL/dpos_j = sum over the centres i of j's crystal, in order, of partial[i, j].
template <typename T>
__global__ void reduce_positions_kernel(const DeviceBatch batch, const int64_t* __restrict__ poff,
                                        const Acc* __restrict__ partial, T* __restrict__ grad_pos) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= batch.n_atoms) return;
  const int b = batch.crystal[j];
  const int64_t first = batch.ptr[b], last = batch.ptr[b + 1];
  if (!(first >= 0 && first <= j && j < last && last <= batch.n_atoms)) {  // malformed ptr
    for (int k = 0; k < 3; ++k) grad_pos[3 * j + k] = quiet_nan<T>();
    return;
  }
  const int64_t n = last - first;
  const Acc* q = partial + (poff[b] + (j - first)) * 3;
  Acc s0 = 0, s1 = 0, s2 = 0;
  for (int64_t il = 0; il < n; ++il, q += 3 * n) {
    s0 += q[0];
    s1 += q[1];
    s2 += q[2];
  }
  grad_pos[3 * j] = static_cast<T>(s0);
  grad_pos[3 * j + 1] = static_cast<T>(s1);
  grad_pos[3 * j + 2] = static_cast<T>(s2);
}

// dL/dH_b = sum over the centres i of crystal b, in order, of partial_cell[i].
template <typename T>
__global__ void reduce_cells_kernel(const DeviceBatch batch, const Acc* __restrict__ partial_cell,
                                    T* __restrict__ grad_cell) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= batch.n_crystals) return;
  int64_t first = batch.ptr[b], last = batch.ptr[b + 1];
  first = first < 0 ? 0 : first;
  last = last > batch.n_atoms ? batch.n_atoms : last;
  Acc s[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t i = first; i < last; ++i)
    for (int k = 0; k < 9; ++k) s[k] += partial_cell[9 * i + k];
  for (int k = 0; k < 9; ++k) grad_cell[9 * b + k] = batch.ok[b] ? static_cast<T>(s[k]) : quiet_nan<T>();
}

}  // namespace
}  // namespace gpu
}  // namespace srd
