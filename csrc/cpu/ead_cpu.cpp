// CPU kernels of the EAD descriptor (SPEC section 1): srd::ead_forward and srd::ead_backward.
//
// Forward, per centre atom i (parallel over atoms, at::parallel_for):
//   for every neighbour image j with r <= min(rc, reach):   d = r_j + n H - r_i,  r = |d|
//     zf = Z_j f_c(r)
//     for every (eta, mu) with eta (r - mu)^2 <= skip:
//       w = zf exp(-eta (r - mu)^2);  rho0 += w;  rho_p += w d_p  (p = x, y, z)
//   F0 = rho0^2;  F1 = (a rho0^2 + rho_x^2 + rho_y^2 + rho_z^2) / rc^2,  a = 1 (cumulative) or 0.
// The per-pair expressions (split, Gaussian, skip rule, w, w', adjoints, features) are those of
// common/ead_pair.h, shared with the CUDA kernels; this file only decides grouping and order.
//
// How it is fast without changing that sum:
//  * The neighbours of a centre are gathered once into a pair list (structure of arrays) and
//    counting-sorted by r, so that L consecutive pairs (L = one SIMD register: 8 float / 4 double)
//    share almost the same window of Gaussian centres; the channel loop then runs across the L
//    pairs ("lanes") with per-lane accumulators [channel][lane], which compilers vectorise fully.
//    The skip rule is applied per lane, so the result does not depend on how pairs are grouped.
//  * exp, cos and sin are branch-free polynomials (ead_math.h) that vectorise.
//  * Pair geometry is computed in float64 for both dtypes, and r - mu is formed from a (hi, lo)
//    split of r and mu, so float32 Gaussians carry ~1e-6 relative error instead of the ~1e-4 a
//    float32 r = 16 Angstrom would give in the steepest channels.
// Nothing of size [pairs x channels] is ever stored: rho (4 x channels per atom) is the only saved
// state, and the backward recomputes every pair quantity.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <vector>

#include "common/ead_grid.h"
#include "common/ead_math.h"
#include "common/ead_pair.h"
#include "cpu/crystal_cpu.h"

namespace srd {
namespace {

// Lanes per SIMD group: one 256-bit register.
template <typename T>
constexpr int64_t kLanes = 32 / static_cast<int64_t>(sizeof(T));

// Per-call constants of the grid in the kernel's dtype.
template <typename T>
struct GridT {
  std::vector<T> eta, mu_hi, mu_lo;
  T skip;
  explicit GridT(const EADGrid& g) : eta(g.etas.begin(), g.etas.end()) {
    for (double m : g.mus) {
      T hi, lo;
      split_hi_lo(m, hi, lo);
      mu_hi.push_back(hi);
      mu_lo.push_back(lo);
    }
    skip = static_cast<T>(g.skip);  // inf stays inf
  }
};

// ------------------------------------------------------------------------------------------------
// The neighbour list of one centre, sorted by r and padded to a multiple of L with inert pairs
// (zf = zdf = 0, j = -1).
// ------------------------------------------------------------------------------------------------
template <typename T>
struct PairList {
  static constexpr int64_t L = kLanes<T>;
  // Gathered in visiting order.
  std::vector<double> r, dx, dy, dz;
  std::vector<int64_t> j, s;  // s: 3 per pair
  // Sorted by r, padded.
  std::vector<double> sr;
  std::vector<T> rhi, rlo, zf, zdf, ux, uy, uz;
  std::vector<int64_t> sj, ss;
  std::vector<int32_t> count, order;
  int64_t n = 0, n_padded = 0;

  // Gathers the neighbours of centre i with 0 < r <= radius (float64 geometry).
  void collect(const HostBatch& hb, int64_t i, double radius, bool with_index) {
    n = 0;
    hb.for_each_neighbor(i, radius, [&](int64_t jj, const double* d, double r2, const int64_t* sh) {
      if (n == static_cast<int64_t>(r.size())) grow(with_index);
      r[n] = std::sqrt(r2);
      dx[n] = d[0];
      dy[n] = d[1];
      dz[n] = d[2];
      j[n] = jj;
      if (with_index) {
        s[3 * n] = sh[0];
        s[3 * n + 1] = sh[1];
        s[3 * n + 2] = sh[2];
      }
      ++n;
    });
  }

  void grow(bool with_index) {
    const size_t cap = std::max<size_t>(1024, 2 * r.size());
    r.resize(cap);
    dx.resize(cap);
    dy.resize(cap);
    dz.resize(cap);
    j.resize(cap);
    if (with_index) s.resize(3 * cap);
  }

  // The L lanes of the group starting at g0 (the structure of arrays above).
  struct Lanes {
    const T *rhi, *rlo, *zf, *zdf, *dx, *dy, *dz;
  };
  Lanes lanes(int64_t g0) const {
    return {rhi.data() + g0, rlo.data() + g0, zf.data() + g0, zdf.data() + g0,
            ux.data() + g0,  uy.data() + g0,  uz.data() + g0};
  }

  // Smallest and largest r of the lane group starting at g0 (the counting sort orders bins, not the
  // pairs within a bin, so the group's ends are not its extremes).
  std::pair<double, double> span(int64_t g0) const {
    double lo = sr[g0], hi = sr[g0];
    for (int64_t l = 1; l < L; ++l) {
      lo = std::min(lo, sr[g0 + l]);
      hi = std::max(hi, sr[g0 + l]);
    }
    return {lo, hi};
  }

  // Counting sort by r (bins of `bin` Angstrom, stable), then the padded structure of arrays.
  void sort_and_pack(double bin, double rc, const int64_t* numbers, bool with_index) {
    const double inv_bin = 1.0 / bin;
    const int64_t nbins = static_cast<int64_t>(rc * inv_bin) + 2;
    count.assign(nbins + 1, 0);
    for (int64_t p = 0; p < n; ++p) ++count[std::min<int64_t>(static_cast<int64_t>(r[p] * inv_bin), nbins - 1) + 1];
    for (int64_t b = 0; b < nbins; ++b) count[b + 1] += count[b];
    order.resize(n);
    for (int64_t p = 0; p < n; ++p)
      order[count[std::min<int64_t>(static_cast<int64_t>(r[p] * inv_bin), nbins - 1)]++] = static_cast<int32_t>(p);
    n_padded = (n + L - 1) / L * L;
    sr.resize(n_padded);
    rhi.resize(n_padded);
    rlo.resize(n_padded);
    zf.resize(n_padded);
    zdf.resize(n_padded);
    ux.resize(n_padded);
    uy.resize(n_padded);
    uz.resize(n_padded);
    sj.resize(n_padded);
    if (with_index) ss.resize(3 * n_padded);
    for (int64_t q = 0; q < n; ++q) {  // gather
      const int64_t p = order[q];
      sr[q] = r[p];
      ux[q] = static_cast<T>(dx[p]);
      uy[q] = static_cast<T>(dy[p]);
      uz[q] = static_cast<T>(dz[p]);
      sj[q] = j[p];
      zf[q] = static_cast<T>(numbers[j[p]]);
      if (with_index)
        for (int k = 0; k < 3; ++k) ss[3 * q + k] = s[3 * p + k];
    }
    for (int64_t q = n; q < n_padded; ++q) {  // inert padding: contributes exactly zero
      sr[q] = n ? sr[n - 1] : 1.0;
      ux[q] = uy[q] = uz[q] = 0;
      sj[q] = -1;
      zf[q] = 0;
      if (with_index)
        for (int k = 0; k < 3; ++k) ss[3 * q + k] = 0;
    }
    const T trc = static_cast<T>(rc);
#pragma omp simd
    for (int64_t q = 0; q < n_padded; ++q) {  // vectorised: split r, cutoff, weights
      T hi, lo, w, dw;
      split_hi_lo(sr[q], hi, lo);
      rhi[q] = hi;
      rlo[q] = lo;
      weighted_cutoff(zf[q], hi, trc, w, dw);
      zf[q] = w;
      zdf[q] = dw;
    }
  }
};

// Lane accumulators: float32 for float32 inputs (each lane sums ~1/L of a centre's few thousand
// terms; lanes are then summed in float64), float64 for float64 inputs.
template <typename T>
using LaneAcc = T;

// Largest eta (r - mu)^2 whose exp is still a normal number, with margin (float: e^-87, double: e^-708).
template <typename T>
constexpr double kMaxArg = sizeof(T) == 4 ? 80.0 : 700.0;

// Per-eta constants of the Gaussian recurrence on a uniform grid mu_k = mu0 + k dmu:
//   g_{k+1} = g_k R_k,  R_k = exp(2 eta dmu t_k - eta dmu^2),  R_{k+1} = R_k c,  c = exp(-2 eta dmu^2),
// with t_k = r - mu_k. Two exponentials per lane and eta replace one per lane and centre.
template <typename T>
struct Recurrence {
  T two_eta_dmu, eta_dmu2, c, dmu;
  double max_spread;  // lanes may start at most this far beyond the window and still not underflow
  Recurrence(double eta, double dmu_, double halfwidth) {
    two_eta_dmu = static_cast<T>(2 * eta * dmu_);
    eta_dmu2 = static_cast<T>(eta * dmu_ * dmu_);
    c = static_cast<T>(std::exp(-2 * eta * dmu_ * dmu_));
    dmu = static_cast<T>(dmu_);
    // g_lo = exp(-eta t^2) must stay normal (eta t^2 <= kMaxArg) and R_lo = exp(2 eta dmu t) finite
    // (2 eta dmu t <= kMaxArg) for every lane, t <= halfwidth + spread.
    max_spread = std::min(std::sqrt(kMaxArg<T> / eta), kMaxArg<T> / (2 * eta * dmu_)) - halfwidth;
  }
  // Exact (re)start at centre mu = (mhi, mlo): t = r - mu, g = exp(-eta t^2), R = exp(2 eta dmu t - eta dmu^2).
  void anchor(T rhi, T rlo, T mhi, T mlo, T eta, T& t, T& g, T& R) const {
    t = gaussian_offset(rhi, rlo, mhi, mlo);
    g = exp_fast(-gaussian_exponent(eta, t));
    R = exp_fast(two_eta_dmu * t - eta_dmu2);
  }
  // One centre up: mu -> mu + dmu.
  void advance(T& t, T& g, T& R) const {
    g *= R;
    R *= c;
    t -= dmu;
  }
};

// The recurrence is restarted from exact exponentials every kAnchor centres: its relative rounding
// error grows by ~2 ulp per step, so this keeps float32 terms within ~16 steps' worth (~2e-6).
constexpr int64_t kAnchor = 16;

// (Re-)anchors the L lanes of a pair group at centre k (Recurrence::anchor): t[l] = r_l - mu_k,
// g[l] = exp(-eta t[l]^2) (times zf[l] when WithZ: the forward's pair term), R[l].
template <bool WithZ, typename T>
inline void anchor_lanes(const Recurrence<T>& q, const GridT<T>& gt, T eta, const T* rhi, const T* rlo, const T* zf,
                         int64_t k, T* t, T* g, T* R) {
#pragma omp simd
  for (int64_t l = 0; l < kLanes<T>; ++l) {
    q.anchor(rhi[l], rlo[l], gt.mu_hi[k], gt.mu_lo[k], eta, t[l], g[l], R[l]);
    if constexpr (WithZ) g[l] = pair_weight(g[l], zf[l]);
  }
}

template <typename T>
struct GridRecurrence {
  std::vector<Recurrence<T>> rows;
  bool enabled;
  explicit GridRecurrence(const EADGrid& g) : enabled(g.uniform && std::isfinite(g.skip) && g.n_mu > 1) {
    if (!enabled) return;
    for (int64_t e = 0; e < g.n_eta; ++e) rows.emplace_back(g.etas[e], g.dmu, g.halfwidth[e]);
  }
};

template <typename T, bool WithL1>
void forward_impl(const EADGrid& grid, const HostBatch& hb, const int64_t* numbers, T* features, T* rho) {
  constexpr int64_t L = kLanes<T>;
  using A = LaneAcc<T>;
  const GridT<T> gt(grid);
  const GridRecurrence<T> rec(grid);
  const int64_t C = grid.n_channels, M = grid.n_mu, E = grid.n_eta;
  const int64_t n_rho = WithL1 ? 4 : 1;
  const double bin = std::min(0.25, grid.uniform ? grid.dmu : 0.25);

  at::parallel_for(0, hb.n_atoms, 1, [&](int64_t begin, int64_t end) {
    PairList<T> pl;
    std::vector<A> acc(n_rho * C * L);
    for (int64_t i = begin; i < end; ++i) {
      pl.collect(hb, i, grid.reach, false);
      pl.sort_and_pack(bin, grid.cutoff, numbers, false);
      std::fill(acc.begin(), acc.end(), A(0));
      A* a0 = acc.data();
      A* ax = a0 + C * L;
      A* ay = a0 + 2 * C * L;
      A* az = a0 + 3 * C * L;
      // The lane accumulators of rho0, rho_x, rho_y, rho_z of the channel at offset c = (e M + k) L.
      const auto channel = [&](int64_t c) { return std::array<A*, 4>{a0 + c, ax + c, ay + c, az + c}; };
      for (int64_t g0 = 0; g0 < pl.n_padded; g0 += L) {
        const auto [rhi, rlo, zf, zdf, dx, dy, dz] = pl.lanes(g0);
        const auto [rmin, rmax] = pl.span(g0);
        for (int64_t e = 0; e < E; ++e) {
          const T eta = gt.eta[e];
          const T skip = gt.skip;
          if (rec.enabled && rmax - rmin <= rec.rows[e].max_spread) {
            // Recurrence path (uniform grid, finite skip, lanes close enough in r).
            int64_t lo, hi;
            grid.exact_range(e, rmin, rmax, lo, hi);
            if (lo > hi) continue;
            const Recurrence<T>& q = rec.rows[e];
            T t[L], g[L], R[L];
            for (int64_t k = lo; k <= hi; ++k) {
              // (re-)anchor: bounds the recurrence's rounding drift
              if ((k - lo) % kAnchor == 0) anchor_lanes<true>(q, gt, eta, rhi, rlo, zf, k, t, g, R);
              const auto [A0, AX, AY, AZ] = channel((e * M + k) * L);
#pragma omp simd
              for (int64_t l = 0; l < L; ++l) {
                const T w = term_kept(gaussian_exponent(eta, t[l]), skip) ? g[l] : T(0);
                A0[l] += w;
                if constexpr (WithL1) {
                  AX[l] += w * dx[l];
                  AY[l] += w * dy[l];
                  AZ[l] += w * dz[l];
                }
                q.advance(t[l], g[l], R[l]);
              }
            }
            continue;
          }
          // Direct path: one exponential per term.
          int64_t lo, hi;
          grid.window_range(e, rmin, rmax, lo, hi);
          for (int64_t k = lo; k <= hi; ++k) {
            const T mh = gt.mu_hi[k], ml = gt.mu_lo[k];
            const auto [A0, AX, AY, AZ] = channel((e * M + k) * L);
#pragma omp simd
            for (int64_t l = 0; l < L; ++l) {
              const T arg = gaussian_exponent(eta, gaussian_offset(rhi[l], rlo[l], mh, ml));
              const T ex = exp_fast(-arg);
              const T w = term_kept(arg, skip) ? pair_weight(ex, zf[l]) : T(0);
              A0[l] += w;
              if constexpr (WithL1) {
                AX[l] += w * dx[l];
                AY[l] += w * dy[l];
                AZ[l] += w * dz[l];
              }
            }
          }
        }
      }
      // Reduce the lanes (float64), then features and the saved rho.
      T* f = features + i * grid.n_features;
      T* rr = rho + i * n_rho * C;
      const double inv_rc2 = inverse_cutoff_squared(grid.cutoff);
      const double a = cumulative_weight(grid.cumulative);
      for (int64_t c = 0; c < C; ++c) {
        double r0 = 0, vx = 0, vy = 0, vz = 0;
        for (int64_t l = 0; l < L; ++l) {
          r0 += a0[c * L + l];
          if constexpr (WithL1) {
            vx += ax[c * L + l];
            vy += ay[c * L + l];
            vz += az[c * L + l];
          }
        }
        f[c] = static_cast<T>(feature_l0(r0));
        rr[c] = static_cast<T>(r0);
        if constexpr (WithL1) {
          f[C + c] = static_cast<T>(feature_l1(r0, vx, vy, vz, a, inv_rc2));
          rr[C + c] = static_cast<T>(vx);
          rr[2 * C + c] = static_cast<T>(vy);
          rr[3 * C + c] = static_cast<T>(vz);
        }
      }
    }
  });
}

// ------------------------------------------------------------------------------------------------
// Backward. With upstream gradients G0 = dL/dF0, G1 = dL/dF1 (per atom and channel):
//   A0 = dL/drho0 = 2 rho0 (G0 + a G1 / rc^2),      A_p = dL/drho_p = 2 rho_p G1 / rc^2.
// For a pair (i, j, n) with d = r_j + n H - r_i, r = |d|, w(r) = Z_j g(r) f_c(r), g = exp(-eta (r-mu)^2):
//   rho0 += w,  rho_p += w d_p   =>
//   dL/dd = [ sum_c (A0_c + A_c . d) w'_c(r) ] d / r  +  sum_c w_c A_c
//   w'(r) = Z_j g (f_c' - 2 eta (r - mu) f_c)
// and then dL/dr_j += dL/dd, dL/dr_i -= dL/dd, dL/dH += s (x) dL/dd, where s is the integer image
// shift relative to the unwrapped input positions (d = pos_j - pos_i + s H).
// Only channels with a non-zero A are visited (max/min pooling leaves most of them zero), and an
// atom without any is skipped entirely. Pairs are grouped in lanes exactly as in the forward.
//
// Determinism: the scatter to j is made race-free and bit-reproducible by giving every chunk of
// centre atoms (a fixed split of each crystal, independent of the thread count) its own buffer and
// summing the buffers of a crystal in chunk order.
// ------------------------------------------------------------------------------------------------
constexpr int64_t kChunksPerCrystal = 8;

template <typename T, bool WithL1>
void backward_impl(const EADGrid& grid, const HostBatch& hb, const int64_t* numbers, const T* grad_f, const T* rho,
                   T* grad_pos, T* grad_cell) {
  constexpr int64_t L = kLanes<T>;
  const GridT<T> gt(grid);
  const GridRecurrence<T> rec(grid);
  const int64_t C = grid.n_channels, M = grid.n_mu, E = grid.n_eta;
  const int64_t n_rho = WithL1 ? 4 : 1;
  const double inv_rc2 = inverse_cutoff_squared(grid.cutoff);
  const double a_cum = cumulative_weight(grid.cumulative);
  const double bin = std::min(0.25, grid.uniform ? grid.dmu : 0.25);

  // Fixed chunking: chunk -> (crystal, first atom, last atom), buffer offset.
  struct Chunk {
    int64_t b, begin, end, buf;
  };
  std::vector<Chunk> chunks;
  int64_t buf_size = 0;
  for (int64_t b = 0; b < hb.n_crystals; ++b) {
    const int64_t n = hb.ptr[b + 1] - hb.ptr[b];
    const int64_t g = (n + kChunksPerCrystal - 1) / kChunksPerCrystal;
    for (int64_t s = hb.ptr[b]; s < hb.ptr[b + 1]; s += g) {
      chunks.push_back({b, s, std::min(s + g, hb.ptr[b + 1]), buf_size});
      buf_size += 3 * n + 9;
    }
  }
  std::vector<double> buffers(buf_size, 0.0);

  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t cbeg, int64_t cend) {
    PairList<T> pl;
    // Active channels of one centre, ordered by (eta, mu): compact index m -> k and A values;
    // act_of[c] = m or -1.
    std::vector<int64_t> act_k(C), act_of(C), row_begin(E + 1);
    std::vector<T> act_a0(C), act_ax(C), act_ay(C), act_az(C);
    T sc[L], vx[L], vy[L], vz[L];
    for (int64_t ci = cbeg; ci < cend; ++ci) {
      const Chunk& ch = chunks[ci];
      const int64_t first = hb.ptr[ch.b];
      double* gbuf = buffers.data() + ch.buf;  // [n, 3] then the 3x3 cell block
      double* gcell = gbuf + 3 * (hb.ptr[ch.b + 1] - first);
      for (int64_t i = ch.begin; i < ch.end; ++i) {
        const T* gf = grad_f + i * grid.n_features;
        const T* rr = rho + i * n_rho * C;
        int64_t m = 0;
        for (int64_t e = 0; e < E; ++e) {
          row_begin[e] = m;
          for (int64_t k = 0; k < M; ++k) {
            const int64_t c = e * M + k;
            const double g0 = gf[c];
            const double g1 = WithL1 ? static_cast<double>(gf[C + c]) : 0.0;
            act_of[c] = -1;
            if (g0 == 0.0 && g1 == 0.0) continue;
            const double r0 = rr[c];
            act_of[c] = m;
            act_k[m] = k;
            act_a0[m] = static_cast<T>(adjoint_rho0(r0, g0, g1, a_cum, inv_rc2));
            if constexpr (WithL1) {
              act_ax[m] = static_cast<T>(adjoint_rho_vec(rr[C + c], g1, inv_rc2));
              act_ay[m] = static_cast<T>(adjoint_rho_vec(rr[2 * C + c], g1, inv_rc2));
              act_az[m] = static_cast<T>(adjoint_rho_vec(rr[3 * C + c], g1, inv_rc2));
            } else {
              act_ax[m] = act_ay[m] = act_az[m] = T(0);
            }
            ++m;
          }
        }
        row_begin[E] = m;
        if (m == 0) continue;  // no gradient reaches this atom's features

        pl.collect(hb, i, grid.reach, true);
        pl.sort_and_pack(bin, grid.cutoff, numbers, true);
        double gi[3] = {0, 0, 0};
        for (int64_t g0 = 0; g0 < pl.n_padded; g0 += L) {
          const auto [rhi, rlo, zf, zdf, dx, dy, dz] = pl.lanes(g0);
          for (int64_t l = 0; l < L; ++l) sc[l] = vx[l] = vy[l] = vz[l] = T(0);
          const auto [rmin, rmax] = pl.span(g0);
          for (int64_t e = 0; e < E; ++e) {
            int64_t mb = row_begin[e], me = row_begin[e + 1];
            if (mb == me) continue;
            const T eta = gt.eta[e];
            const T two_eta = 2 * eta;
            const T skip = gt.skip;
            if (rec.enabled && rmax - rmin <= rec.rows[e].max_spread) {
              // Recurrence path: step g through the window; work only at active channels.
              int64_t lo, hi;
              grid.exact_range(e, rmin, rmax, lo, hi);
              // Trim the window to the first/last active channel.
              mb = std::lower_bound(act_k.begin() + mb, act_k.begin() + me, lo) - act_k.begin();
              me = std::upper_bound(act_k.begin() + mb, act_k.begin() + me, hi) - act_k.begin();
              if (mb == me) continue;
              lo = act_k[mb];
              hi = act_k[me - 1];
              const Recurrence<T>& q = rec.rows[e];
              T t[L], g[L], R[L];
              for (int64_t k = lo; k <= hi; ++k) {
                // (re-)anchor (as in the forward)
                if ((k - lo) % kAnchor == 0) anchor_lanes<false>(q, gt, eta, rhi, rlo, zf, k, t, g, R);
                const int64_t mm = act_of[e * M + k];
                if (mm >= 0) {
                  const T A0 = act_a0[mm], AX = act_ax[mm], AY = act_ay[mm], AZ = act_az[mm];
#pragma omp simd
                  for (int64_t l = 0; l < L; ++l) {
                    const T gg = term_kept(gaussian_exponent(eta, t[l]), skip) ? g[l] : T(0);
                    const T w = pair_weight(gg, zf[l]);
                    const T dw = pair_weight_derivative(gg, zf[l], zdf[l], two_eta, t[l]);
                    sc[l] += adjoint_along(A0, AX, AY, AZ, dx[l], dy[l], dz[l]) * dw;
                    vx[l] += w * AX;
                    vy[l] += w * AY;
                    vz[l] += w * AZ;
                  }
                }
#pragma omp simd
                for (int64_t l = 0; l < L; ++l) q.advance(t[l], g[l], R[l]);
              }
              continue;
            }
            // Direct path: one exponential per (active channel, lane).
            int64_t lo, hi;
            grid.window_range(e, rmin, rmax, lo, hi);
            mb = std::lower_bound(act_k.begin() + mb, act_k.begin() + me, lo) - act_k.begin();
            me = std::upper_bound(act_k.begin() + mb, act_k.begin() + me, hi) - act_k.begin();
            for (int64_t qa = mb; qa < me; ++qa) {
              const T mh = gt.mu_hi[act_k[qa]], ml = gt.mu_lo[act_k[qa]];
              const T A0 = act_a0[qa], AX = act_ax[qa], AY = act_ay[qa], AZ = act_az[qa];
#pragma omp simd
              for (int64_t l = 0; l < L; ++l) {
                const T tt = gaussian_offset(rhi[l], rlo[l], mh, ml);
                const T arg = gaussian_exponent(eta, tt);
                const T ex = exp_fast(-arg);
                const T gg = term_kept(arg, skip) ? ex : T(0);
                const T w = pair_weight(gg, zf[l]);
                const T dw = pair_weight_derivative(gg, zf[l], zdf[l], two_eta, tt);
                sc[l] += adjoint_along(A0, AX, AY, AZ, dx[l], dy[l], dz[l]) * dw;
                vx[l] += w * AX;
                vy[l] += w * AY;
                vz[l] += w * AZ;
              }
            }
          }
          for (int64_t l = 0; l < L; ++l) {
            const int64_t qq = g0 + l;
            const int64_t j = pl.sj[qq];
            if (j < 0) break;  // padding
            const double inv_r = 1.0 / pl.sr[qq];
            const double gd[3] = {pair_gradient(sc[l], dx[l], inv_r, vx[l]), pair_gradient(sc[l], dy[l], inv_r, vy[l]),
                                  pair_gradient(sc[l], dz[l], inv_r, vz[l])};
            double* gj = gbuf + 3 * (j - first);
            for (int k = 0; k < 3; ++k) {
              gj[k] += gd[k];
              gi[k] -= gd[k];
            }
            const int64_t* s = pl.ss.data() + 3 * qq;
            for (int a = 0; a < 3; ++a) {
              if (s[a] == 0) continue;
              const double sa = static_cast<double>(s[a]);
              for (int k = 0; k < 3; ++k) gcell[3 * a + k] += sa * gd[k];
            }
          }
        }
        double* gi_buf = gbuf + 3 * (i - first);
        for (int k = 0; k < 3; ++k) gi_buf[k] += gi[k];
      }
    }
  });

  // Sum the chunk buffers of each crystal in chunk order.
  std::vector<int64_t> first_chunk(hb.n_crystals + 1, static_cast<int64_t>(chunks.size()));
  for (int64_t ci = static_cast<int64_t>(chunks.size()) - 1; ci >= 0; --ci) first_chunk[chunks[ci].b] = ci;
  at::parallel_for(0, hb.n_crystals, 1, [&](int64_t bbeg, int64_t bend) {
    for (int64_t b = bbeg; b < bend; ++b) {
      const int64_t first = hb.ptr[b], n = hb.ptr[b + 1] - first;
      std::vector<double> sum(3 * n + 9, 0.0);
      for (int64_t ci = first_chunk[b]; ci < static_cast<int64_t>(chunks.size()) && chunks[ci].b == b; ++ci) {
        const double* buf = buffers.data() + chunks[ci].buf;
        for (int64_t k = 0; k < 3 * n + 9; ++k) sum[k] += buf[k];
      }
      for (int64_t k = 0; k < 3 * n; ++k) grad_pos[3 * first + k] = static_cast<T>(sum[k]);
      for (int64_t k = 0; k < 9; ++k) grad_cell[9 * b + k] = static_cast<T>(sum[3 * n + k]);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> ead_forward_cpu(const at::Tensor& positions, const at::Tensor& numbers,
                                                   const at::Tensor& cells, const at::Tensor& ptr,
                                                   c10::ArrayRef<double> etas, c10::ArrayRef<double> mus, double cutoff,
                                                   int64_t lmax, bool cumulative, double skip_exponent) {
  check_structure_args("srd.ead", positions, numbers, cells, ptr);
  const EADGrid grid(etas, mus, cutoff, lmax, cumulative, skip_exponent);
  const auto [pos, num, cel, pt, gf_, rh_] = contiguous_tensors(positions, numbers, cells, ptr);
  const int64_t N = pos.size(0);
  at::Tensor features = at::empty({N, grid.n_features}, pos.options());
  at::Tensor rho = at::empty({N, grid.n_rho, grid.n_channels}, pos.options());
  if (N == 0) return {features, rho};
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "ead_forward_cpu", [&] {
    const HostBatch hb(pos, cel, pt, "srd.ead", static_cast<const scalar_t*>(nullptr));
    hb.check_image_bound(grid.reach, "srd.ead");
    if (lmax >= 1)
      forward_impl<scalar_t, true>(grid, hb, num.data_ptr<int64_t>(), features.data_ptr<scalar_t>(),
                                   rho.data_ptr<scalar_t>());
    else
      forward_impl<scalar_t, false>(grid, hb, num.data_ptr<int64_t>(), features.data_ptr<scalar_t>(),
                                    rho.data_ptr<scalar_t>());
  });
  return {features, rho};
}

std::tuple<at::Tensor, at::Tensor> ead_backward_cpu(const at::Tensor& grad_features, const at::Tensor& positions,
                                                    const at::Tensor& numbers, const at::Tensor& cells,
                                                    const at::Tensor& ptr, const at::Tensor& rho,
                                                    c10::ArrayRef<double> etas, c10::ArrayRef<double> mus,
                                                    double cutoff, int64_t lmax, bool cumulative,
                                                    double skip_exponent) {
  check_structure_args("srd.ead_backward", positions, numbers, cells, ptr);
  const EADGrid grid(etas, mus, cutoff, lmax, cumulative, skip_exponent);
  check_backward_args("srd.ead_backward", grad_features, rho, positions, grid);
  const int64_t N = positions.size(0);
  const auto [pos, num, cel, pt, gf, rh] = contiguous_tensors(positions, numbers, cells, ptr, grad_features, rho);
  at::Tensor grad_pos = at::zeros_like(pos);
  at::Tensor grad_cell = at::zeros_like(cel);
  if (N == 0) return {grad_pos, grad_cell};
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "ead_backward_cpu", [&] {
    const HostBatch hb(pos, cel, pt, "srd.ead_backward", static_cast<const scalar_t*>(nullptr));
    hb.check_image_bound(grid.reach, "srd.ead_backward");
    if (lmax >= 1)
      backward_impl<scalar_t, true>(grid, hb, num.data_ptr<int64_t>(), gf.data_ptr<scalar_t>(), rh.data_ptr<scalar_t>(),
                                    grad_pos.data_ptr<scalar_t>(), grad_cell.data_ptr<scalar_t>());
    else
      backward_impl<scalar_t, false>(grid, hb, num.data_ptr<int64_t>(), gf.data_ptr<scalar_t>(),
                                     rh.data_ptr<scalar_t>(), grad_pos.data_ptr<scalar_t>(),
                                     grad_cell.data_ptr<scalar_t>());
  });
  return {grad_pos, grad_cell};
}

}  // namespace

TORCH_LIBRARY_IMPL(srd, CPU, m) {
  m.impl("ead_forward", &ead_forward_cpu);
  m.impl("ead_backward", &ead_backward_cpu);
}

}  // namespace srd
