// The descriptor grid (etas x mus, cutoff, lmax, L=1 variant, skip threshold) as the kernels see it,
// built once per call from the op's arguments, and the checks on the arguments every op shares.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace srd {

struct EADGrid {
  std::vector<double> etas;  // Gaussian widths eta (1/Angstrom^2), one row of channels each
  std::vector<double> mus;   // Gaussian centres mu (Angstrom), ascending; shared by every eta
  double cutoff = 20.0;      // r_c (Angstrom)
  int64_t lmax = 1;          // 0: rho0^2 only; 1: also the L=1 feature
  bool cumulative = true;    // L=1 = (rho0^2 + |rho_vec|^2)/rc^2 (true) or |rho_vec|^2/rc^2 (false)
  double skip = 40.0;        // skip terms with eta (r - mu)^2 > skip; +inf = dense

  // Derived.
  int64_t n_eta = 0, n_mu = 0, n_channels = 0, n_features = 0;
  int64_t n_rho = 0;     // rho saved per channel: 4 (rho0, rho_x, rho_y, rho_z) for lmax 1, else 1
  bool uniform = false;  // mus = mu0 + k dmu (then the window of a pair is found in O(1))
  double mu0 = 0, dmu = 0;
  std::vector<double> halfwidth;  // per eta: sqrt(skip / eta) (inf when dense)
  double reach = 0;               // pairs beyond this distance contribute nothing: min(rc, max mu + max halfwidth)

  EADGrid(c10::ArrayRef<double> etas_, c10::ArrayRef<double> mus_, double cutoff_, int64_t lmax_, bool cumulative_,
          double skip_)
      : etas(etas_.begin(), etas_.end()), mus(mus_.begin(), mus_.end()), cutoff(cutoff_), lmax(lmax_),
        cumulative(cumulative_), skip(skip_) {
    TORCH_CHECK_VALUE(!etas.empty(), "srd.ead: etas must not be empty");
    TORCH_CHECK_VALUE(!mus.empty(), "srd.ead: mus must not be empty");
    TORCH_CHECK_VALUE(std::isfinite(cutoff) && cutoff > 0,
                      "srd.ead: cutoff must be a finite number > 0 (Angstrom), got ", cutoff);
    TORCH_CHECK_VALUE(lmax == 0 || lmax == 1, "srd.ead: lmax must be 0 or 1, got ", lmax);
    TORCH_CHECK_VALUE(skip > 0, "srd.ead: skip_exponent must be > 0 (or inf for dense), got ", skip);
    for (double e : etas)
      TORCH_CHECK_VALUE(std::isfinite(e) && e > 0, "srd.ead: every eta must be finite and > 0, got ", e);
    for (size_t k = 0; k < mus.size(); ++k) {
      TORCH_CHECK_VALUE(std::isfinite(mus[k]), "srd.ead: mus[", k, "] is not finite");
      if (k) TORCH_CHECK_VALUE(mus[k] > mus[k - 1], "srd.ead: mus must be strictly ascending");
    }
    n_eta = static_cast<int64_t>(etas.size());
    n_mu = static_cast<int64_t>(mus.size());
    n_channels = n_eta * n_mu;
    n_features = (lmax + 1) * n_channels;
    n_rho = lmax >= 1 ? 4 : 1;
    mu0 = mus.front();
    dmu = n_mu > 1 ? (mus.back() - mus.front()) / static_cast<double>(n_mu - 1) : 1.0;
    uniform = true;
    for (int64_t k = 0; k < n_mu; ++k)
      if (std::fabs(mus[k] - (mu0 + k * dmu)) > 1e-9 * (1.0 + std::fabs(mus[k]))) uniform = false;
    halfwidth.resize(n_eta);
    double max_hw = 0;
    for (int64_t e = 0; e < n_eta; ++e) {
      halfwidth[e] = std::isfinite(skip) ? std::sqrt(skip / etas[e]) : std::numeric_limits<double>::infinity();
      max_hw = std::max(max_hw, halfwidth[e]);
    }
    reach = std::isfinite(max_hw) ? std::min(cutoff, mus.back() + max_hw) : cutoff;
  }

  // The skip rule: a term exp(-eta (r - mu)^2) is kept iff eta (r - mu)^2 <= skip (every term when
  // skip = inf). Kernels evaluate that predicate per term; the ranges below only bound the loops.
  //
  // window(): the centres k of row e that can be kept for a pair at distance r, as [lo, hi]
  // (hi < lo: none), widened by one centre on each side so that rounding never drops a kept term.
  inline void window(int64_t e, double r, int64_t& lo, int64_t& hi) const { window_range(e, r, r, lo, hi); }

  // exact_range(): the centres k with |r - mu_k| <= halfwidth for some r in [rmin, rmax], not widened
  // (a term exactly at the threshold may fall either way: it is exp(-skip) of the peak). Uniform
  // grids and finite skip only.
  inline void exact_range(int64_t e, double rmin, double rmax, int64_t& lo, int64_t& hi) const {
    const double hw = halfwidth[e];
    lo = std::max<int64_t>(static_cast<int64_t>(std::ceil((rmin - hw - mu0) / dmu)), 0);
    hi = std::min<int64_t>(static_cast<int64_t>(std::floor((rmax + hw - mu0) / dmu)), n_mu - 1);
  }

  // window_range(): the union of window() over distances in [rmin, rmax].
  inline void window_range(int64_t e, double rmin, double rmax, int64_t& lo, int64_t& hi) const {
    const double hw = halfwidth[e];
    if (!std::isfinite(hw)) {
      lo = 0;
      hi = n_mu - 1;
      return;
    }
    if (uniform) {
      lo = static_cast<int64_t>(std::ceil((rmin - hw - mu0) / dmu)) - 1;
      hi = static_cast<int64_t>(std::floor((rmax + hw - mu0) / dmu)) + 1;
    } else {
      lo = std::lower_bound(mus.begin(), mus.end(), rmin - hw) - mus.begin() - 1;
      hi = std::upper_bound(mus.begin(), mus.end(), rmax + hw) - mus.begin();
    }
    lo = std::max<int64_t>(lo, 0);
    hi = std::min<int64_t>(hi, n_mu - 1);
  }
};

// Metadata checks shared by every op (the Python wrapper checks values and gives row numbers).
inline void check_structure_args(const char* op, const at::Tensor& positions, const at::Tensor& numbers,
                                 const at::Tensor& cells, const at::Tensor& ptr) {
  TORCH_CHECK_VALUE(positions.dim() == 2 && positions.size(1) == 3, op, ": positions must have shape [N, 3], got ",
                    positions.sizes());
  TORCH_CHECK_VALUE(positions.scalar_type() == at::kFloat || positions.scalar_type() == at::kDouble, op,
                    ": positions must be float32 or float64, got ", positions.scalar_type());
  TORCH_CHECK_VALUE(cells.dim() == 3 && cells.size(1) == 3 && cells.size(2) == 3, op,
                    ": cells must have shape [B, 3, 3], got ", cells.sizes());
  TORCH_CHECK_VALUE(cells.scalar_type() == positions.scalar_type(), op, ": cells must have the dtype of positions (",
                    positions.scalar_type(), "), got ", cells.scalar_type());
  TORCH_CHECK_VALUE(ptr.dim() == 1 && ptr.size(0) == cells.size(0) + 1, op, ": ptr must have shape [B + 1] = [",
                    cells.size(0) + 1, "], got ", ptr.sizes());
  TORCH_CHECK_VALUE(ptr.scalar_type() == at::kLong, op, ": ptr must be int64, got ", ptr.scalar_type());
  if (numbers.defined()) {
    TORCH_CHECK_VALUE(numbers.dim() == 1 && numbers.size(0) == positions.size(0), op,
                      ": numbers must have shape [N] = [", positions.size(0), "], got ", numbers.sizes());
    TORCH_CHECK_VALUE(numbers.scalar_type() == at::kLong, op, ": numbers must be int64, got ", numbers.scalar_type());
    TORCH_CHECK_VALUE(numbers.device() == positions.device(), op, ": numbers is on ", numbers.device(),
                      " but positions is on ", positions.device());
  }
  TORCH_CHECK_VALUE(cells.device() == positions.device(), op, ": cells is on ", cells.device(), " but positions is on ",
                    positions.device());
  TORCH_CHECK_VALUE(ptr.device() == positions.device(), op, ": ptr is on ", ptr.device(), " but positions is on ",
                    positions.device());
}

// The tensors of an ead_forward / ead_backward call as the kernels read them: contiguous, and
// grad_features and rho (ead_backward only; undefined otherwise) in the dtype of positions.
struct EADTensors {
  at::Tensor pos, num, cel, pt, gf, rh;
};

inline EADTensors contiguous_tensors(const at::Tensor& positions, const at::Tensor& numbers, const at::Tensor& cells,
                                     const at::Tensor& ptr, const at::Tensor& grad_features = at::Tensor(),
                                     const at::Tensor& rho = at::Tensor()) {
  EADTensors t{positions.contiguous(), numbers.contiguous(), cells.contiguous(), ptr.contiguous(), {}, {}};
  if (grad_features.defined()) t.gf = grad_features.contiguous().to(positions.scalar_type());
  if (rho.defined()) t.rh = rho.contiguous().to(positions.scalar_type());
  return t;
}

// Metadata checks of ead_backward's own arguments (after check_structure_args and the EADGrid of
// the call), shared by the CPU and the CUDA op.
inline void check_backward_args(const char* op, const at::Tensor& grad_features, const at::Tensor& rho,
                                const at::Tensor& positions, const EADGrid& grid) {
  const int64_t N = positions.size(0);
  TORCH_CHECK_VALUE(grad_features.dim() == 2 && grad_features.size(0) == N && grad_features.size(1) == grid.n_features,
                    op, ": grad_features must have shape [", N, ", ", grid.n_features, "], got ",
                    grad_features.sizes());
  TORCH_CHECK_VALUE(rho.dim() == 3 && rho.size(0) == N && rho.size(1) == grid.n_rho && rho.size(2) == grid.n_channels,
                    op, ": rho must have shape [", N, ", ", grid.n_rho, ", ", grid.n_channels, "], got ", rho.sizes());
  TORCH_CHECK_VALUE(grad_features.device() == positions.device(), op, ": grad_features is on ", grad_features.device(),
                    " but positions is on ", positions.device());
  TORCH_CHECK_VALUE(rho.device() == positions.device(), op, ": rho is on ", rho.device(), " but positions is on ",
                    positions.device());
}

}  // namespace srd
