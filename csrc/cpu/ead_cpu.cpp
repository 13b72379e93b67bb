// CPU kernels of the EAD descriptor (SPEC section 1): srd::ead_forward and srd::ead_backward.
//
// Forward, per centre atom i (parallel over atoms, at::parallel_for):
//   for every neighbour image j within min(rc, reach):   d = r_j + n H - r_i,  r = |d|
//     zf = Z_j f_c(r)
//     for every eta, for the centres mu inside the pair's window |r - mu| <= sqrt(skip / eta):
//       w = zf exp(-eta (r - mu)^2);  rho0 += w;  rho_p += w d_p  (p = x, y, z)
//   F0 = rho0^2;  F1 = (a rho0^2 + rho_x^2 + rho_y^2 + rho_z^2) / rc^2,  a = 1 (cumulative) or 0.
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
#include <vector>

#include "common/ead_grid.h"
#include "common/ead_math.h"
#include "cpu/crystal_cpu.h"

namespace srd {
namespace {

// Accumulators are float64 for both input dtypes: a centre atom sums thousands of terms per
// channel, and the extra width costs little next to the exponentials.
using Acc = double;

template <typename T>
struct GridT {
  std::vector<T> eta, mu;
  explicit GridT(const EADGrid& g) : eta(g.etas.begin(), g.etas.end()), mu(g.mus.begin(), g.mus.end()) {}
};

template <typename T, bool WithL1>
void forward_impl(const EADGrid& grid, const HostBatch<T>& hb, const int64_t* numbers, T* features, T* rho) {
  const GridT<T> gt(grid);
  const int64_t C = grid.n_channels, M = grid.n_mu, E = grid.n_eta;
  const T rc = static_cast<T>(grid.cutoff);
  const T radius = static_cast<T>(grid.reach);
  const int64_t n_rho = WithL1 ? 4 : 1;

  at::parallel_for(0, hb.n_atoms, 1, [&](int64_t begin, int64_t end) {
    std::vector<Acc> acc(n_rho * C);
    for (int64_t i = begin; i < end; ++i) {
      std::fill(acc.begin(), acc.end(), Acc(0));
      Acc* a0 = acc.data();
      Acc* ax = WithL1 ? a0 + C : nullptr;
      Acc* ay = WithL1 ? a0 + 2 * C : nullptr;
      Acc* az = WithL1 ? a0 + 3 * C : nullptr;
      hb.for_each_neighbor(i, radius, [&](int64_t j, const T* d, T r2, const int64_t*) {
        const T r = std::sqrt(r2);
        T fc, dfc;
        cutoff_and_derivative(r, rc, fc, dfc);
        const T zf = static_cast<T>(numbers[j]) * fc;
        const T dx = d[0], dy = d[1], dz = d[2];
        for (int64_t e = 0; e < E; ++e) {
          int64_t lo, hi;
          grid.window(e, static_cast<double>(r), lo, hi);
          const T eta = gt.eta[e];
          const T* mu = gt.mu.data() + 0;
          const int64_t off = e * M;
          if constexpr (WithL1) {
#pragma omp simd
            for (int64_t k = lo; k <= hi; ++k) {
              const T t = r - mu[k];
              const Acc w = static_cast<Acc>(zf * exp_nonpositive(-eta * t * t));
              a0[off + k] += w;
              ax[off + k] += w * dx;
              ay[off + k] += w * dy;
              az[off + k] += w * dz;
            }
          } else {
#pragma omp simd
            for (int64_t k = lo; k <= hi; ++k) {
              const T t = r - mu[k];
              a0[off + k] += static_cast<Acc>(zf * exp_nonpositive(-eta * t * t));
            }
          }
        }
      });
      // Features and the saved rho.
      T* f = features + i * grid.n_features;
      T* rr = rho + i * n_rho * C;
      const Acc inv_rc2 = Acc(1) / (static_cast<Acc>(rc) * static_cast<Acc>(rc));
      const Acc a = grid.cumulative ? Acc(1) : Acc(0);
      for (int64_t c = 0; c < C; ++c) {
        const Acc r0 = a0[c];
        f[c] = static_cast<T>(r0 * r0);
        rr[c] = static_cast<T>(r0);
        if constexpr (WithL1) {
          const Acc vx = ax[c], vy = ay[c], vz = az[c];
          f[C + c] = static_cast<T>((a * r0 * r0 + vx * vx + vy * vy + vz * vz) * inv_rc2);
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
// atom without any is skipped entirely.
//
// Determinism: the scatter to j is made race-free and bit-reproducible by giving every chunk of
// centre atoms (a fixed split of each crystal, independent of the thread count) its own buffer and
// summing the buffers of a crystal in chunk order.
// ------------------------------------------------------------------------------------------------
constexpr int64_t kChunksPerCrystal = 8;

template <typename T, bool WithL1>
void backward_impl(const EADGrid& grid, const HostBatch<T>& hb, const int64_t* numbers, const T* grad_f,
                   const T* rho, T* grad_pos, T* grad_cell) {
  const GridT<T> gt(grid);
  const int64_t C = grid.n_channels, M = grid.n_mu, E = grid.n_eta;
  const T rc = static_cast<T>(grid.cutoff);
  const T radius = static_cast<T>(grid.reach);
  const int64_t n_rho = WithL1 ? 4 : 1;
  const Acc inv_rc2 = Acc(1) / (static_cast<Acc>(rc) * static_cast<Acc>(rc));
  const Acc a_cum = grid.cumulative ? Acc(1) : Acc(0);

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
  std::vector<Acc> buffers(buf_size, Acc(0));

  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t cbeg, int64_t cend) {
    // Compacted active channels of one centre: index k within its eta row, mu, and A values.
    std::vector<int64_t> act_k(C), row_begin(E + 1);
    std::vector<T> act_mu(C), act_a0(C), act_ax(C), act_ay(C), act_az(C);
    for (int64_t ci = cbeg; ci < cend; ++ci) {
      const Chunk& ch = chunks[ci];
      const int64_t first = hb.ptr[ch.b];
      Acc* gbuf = buffers.data() + ch.buf;          // [n, 3] then the 3x3 cell block
      Acc* gcell = gbuf + 3 * (hb.ptr[ch.b + 1] - first);
      for (int64_t i = ch.begin; i < ch.end; ++i) {
        const T* gf = grad_f + i * grid.n_features;
        const T* rr = rho + i * n_rho * C;
        int64_t m = 0;
        for (int64_t e = 0; e < E; ++e) {
          row_begin[e] = m;
          for (int64_t k = 0; k < M; ++k) {
            const int64_t c = e * M + k;
            const Acc g0 = gf[c];
            const Acc g1 = WithL1 ? static_cast<Acc>(gf[C + c]) : Acc(0);
            if (g0 == Acc(0) && g1 == Acc(0)) continue;
            const Acc r0 = rr[c];
            act_k[m] = k;
            act_mu[m] = gt.mu[k];
            act_a0[m] = static_cast<T>(2 * r0 * (g0 + a_cum * g1 * inv_rc2));
            if constexpr (WithL1) {
              act_ax[m] = static_cast<T>(2 * static_cast<Acc>(rr[C + c]) * g1 * inv_rc2);
              act_ay[m] = static_cast<T>(2 * static_cast<Acc>(rr[2 * C + c]) * g1 * inv_rc2);
              act_az[m] = static_cast<T>(2 * static_cast<Acc>(rr[3 * C + c]) * g1 * inv_rc2);
            } else {
              act_ax[m] = act_ay[m] = act_az[m] = T(0);
            }
            ++m;
          }
        }
        row_begin[E] = m;
        if (m == 0) continue;  // no gradient reaches this atom's features

        Acc gi[3] = {0, 0, 0};
        hb.for_each_neighbor(i, radius, [&](int64_t j, const T* d, T r2, const int64_t* s) {
          const T r = std::sqrt(r2);
          T fc, dfc;
          cutoff_and_derivative(r, rc, fc, dfc);
          const T zn = static_cast<T>(numbers[j]);
          const T zf = zn * fc, zdf = zn * dfc;
          const T dx = d[0], dy = d[1], dz = d[2];
          T sc = 0, vx = 0, vy = 0, vz = 0;
          for (int64_t e = 0; e < E; ++e) {
            const int64_t mb = row_begin[e], me = row_begin[e + 1];
            if (mb == me) continue;
            int64_t lo, hi;
            grid.window(e, static_cast<double>(r), lo, hi);
            const T eta = gt.eta[e];
            const T two_eta = 2 * eta;
#pragma omp simd reduction(+ : sc, vx, vy, vz)
            for (int64_t q = mb; q < me; ++q) {
              const T t = r - act_mu[q];
              const bool in = act_k[q] >= lo && act_k[q] <= hi;
              const T g = in ? exp_nonpositive(-eta * t * t) : T(0);
              const T w = g * zf;
              const T dw = g * (zdf - two_eta * t * zf);
              sc += (act_a0[q] + act_ax[q] * dx + act_ay[q] * dy + act_az[q] * dz) * dw;
              vx += w * act_ax[q];
              vy += w * act_ay[q];
              vz += w * act_az[q];
            }
          }
          const T inv_r = T(1) / r;
          const Acc gd[3] = {static_cast<Acc>(sc * dx * inv_r + vx), static_cast<Acc>(sc * dy * inv_r + vy),
                             static_cast<Acc>(sc * dz * inv_r + vz)};
          Acc* gj = gbuf + 3 * (j - first);
          for (int k = 0; k < 3; ++k) {
            gj[k] += gd[k];
            gi[k] -= gd[k];
          }
          for (int a = 0; a < 3; ++a) {
            if (s[a] == 0) continue;
            const Acc sa = static_cast<Acc>(s[a]);
            for (int k = 0; k < 3; ++k) gcell[3 * a + k] += sa * gd[k];
          }
        });
        Acc* gi_buf = gbuf + 3 * (i - first);
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
      std::vector<Acc> sum(3 * n + 9, Acc(0));
      for (int64_t ci = first_chunk[b]; ci < static_cast<int64_t>(chunks.size()) && chunks[ci].b == b; ++ci) {
        const Acc* buf = buffers.data() + chunks[ci].buf;
        for (int64_t k = 0; k < 3 * n + 9; ++k) sum[k] += buf[k];
      }
      for (int64_t k = 0; k < 3 * n; ++k) grad_pos[3 * first + k] = static_cast<T>(sum[k]);
      for (int64_t k = 0; k < 9; ++k) grad_cell[9 * b + k] = static_cast<T>(sum[3 * n + k]);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> ead_forward_cpu(const at::Tensor& positions, const at::Tensor& numbers,
                                                   const at::Tensor& cells, const at::Tensor& ptr,
                                                   c10::ArrayRef<double> etas, c10::ArrayRef<double> mus,
                                                   double cutoff, int64_t lmax, bool cumulative,
                                                   double skip_exponent) {
  check_structure_args("srd.ead", positions, numbers, cells, ptr);
  const EADGrid grid(etas, mus, cutoff, lmax, cumulative, skip_exponent);
  const at::Tensor pos = positions.contiguous(), num = numbers.contiguous(), cel = cells.contiguous(),
                   pt = ptr.contiguous();
  const int64_t N = pos.size(0);
  const int64_t n_rho = lmax >= 1 ? 4 : 1;
  at::Tensor features = at::empty({N, grid.n_features}, pos.options());
  at::Tensor rho = at::empty({N, n_rho, grid.n_channels}, pos.options());
  if (N == 0) return {features, rho};
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "ead_forward_cpu", [&] {
    const HostBatch<scalar_t> hb(pos, cel, pt, "srd.ead");
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
  const int64_t N = positions.size(0);
  TORCH_CHECK_VALUE(grad_features.dim() == 2 && grad_features.size(0) == N &&
                        grad_features.size(1) == grid.n_features,
                    "srd.ead_backward: grad_features must have shape [", N, ", ", grid.n_features, "], got ",
                    grad_features.sizes());
  const int64_t n_rho = lmax >= 1 ? 4 : 1;
  TORCH_CHECK_VALUE(rho.dim() == 3 && rho.size(0) == N && rho.size(1) == n_rho && rho.size(2) == grid.n_channels,
                    "srd.ead_backward: rho must have shape [", N, ", ", n_rho, ", ", grid.n_channels, "], got ",
                    rho.sizes());
  const at::Tensor pos = positions.contiguous(), num = numbers.contiguous(), cel = cells.contiguous(),
                   pt = ptr.contiguous(), gf = grad_features.contiguous().to(positions.scalar_type()),
                   rh = rho.contiguous().to(positions.scalar_type());
  at::Tensor grad_pos = at::zeros_like(pos);
  at::Tensor grad_cell = at::zeros_like(cel);
  if (N == 0) return {grad_pos, grad_cell};
  AT_DISPATCH_FLOATING_TYPES(pos.scalar_type(), "ead_backward_cpu", [&] {
    const HostBatch<scalar_t> hb(pos, cel, pt, "srd.ead_backward");
    if (lmax >= 1)
      backward_impl<scalar_t, true>(grid, hb, num.data_ptr<int64_t>(), gf.data_ptr<scalar_t>(),
                                    rh.data_ptr<scalar_t>(), grad_pos.data_ptr<scalar_t>(),
                                    grad_cell.data_ptr<scalar_t>());
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
