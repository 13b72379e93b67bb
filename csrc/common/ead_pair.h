// The per-pair maths of the EAD descriptor (SPEC section 1), written once for every back end: the
// CPU kernels (cpu/ead_cpu.cpp), the CUDA kernels (cuda/ead_kernels.cuh) and, through those, the CPU
// emulation of the CUDA kernels (cuda/selfcheck). All `SRD_HD` (host + device) and header-only, so
// that each back end evaluates the same expressions in the same order; what differs between back
// ends is only how pairs and channels are grouped and in which order terms are summed.
//
// For a centre i, a neighbour image j (d = r_j + n H - r_i, r = |d| <= reach) and a channel
// (eta, mu):
//   t = r - mu,   g = exp(-eta t^2),   kept iff eta t^2 <= skip (+inf: dense),
//   w = Z_j f_c(r) g                                   (the pair term)
//   w' = dw/dr = g (Z_j f_c'(r) - 2 eta t Z_j f_c(r))  (its derivative)
//   rho0 = sum w,  rho_p = sum w d_p  (p = x, y, z)
//   F0 = rho0^2,   F1 = (a rho0^2 + |rho_vec|^2) / rc^2   (a = 1 cumulative, 0 separate)
// Backward, with G0 = dL/dF0, G1 = dL/dF1 of the channel (the adjoint of the densities):
//   A0 = dL/drho0 = 2 rho0 (G0 + a G1 / rc^2),   A_p = dL/drho_p = 2 rho_p G1 / rc^2
//   dL/dd = [sum_c (A0_c + A_c . d) w'_c] d / r + sum_c w_c A_c.
//
// Precision (both back ends): pair geometry in float64; the Gaussian in the kernel's dtype T with
// t formed from a (hi, lo) split of r and mu into T (lo = 0 in float64), so that float32 Gaussians
// carry ~1e-6 relative error instead of the ~1e-4 a float32 r = 16 Angstrom would give; the
// adjoints, features and the final dL/dd in float64.
#pragma once

#include "common/ead_math.h"

namespace srd {

// (hi, lo) split of a float64 value into T: hi = T(x), lo = T(x - hi) (lo = 0 when T is double).
template <typename T>
SRD_HD void split_hi_lo(double x, T& hi, T& lo) {
  hi = static_cast<T>(x);
  lo = static_cast<T>(x - static_cast<double>(hi));
}

// t = r - mu from the splits of r and mu.
template <typename T>
SRD_HD T gaussian_offset(T r_hi, T r_lo, T mu_hi, T mu_lo) {
  return (r_hi - mu_hi) + (r_lo - mu_lo);
}

// The exponent eta t^2 of the Gaussian g = exp(-eta t^2).
template <typename T>
SRD_HD T gaussian_exponent(T eta, T t) {
  return eta * t * t;
}

// The skip rule: a term is kept iff eta t^2 <= skip (every term when skip = +inf). Kernels apply it
// to every term; windows of channels (EADGrid::window, device_window) only bound their loops.
template <typename T>
SRD_HD bool term_kept(T exponent, T skip) {
  return exponent <= skip;
}

// Z_j f_c(r) and Z_j f_c'(r) (ead_math.h: cutoff_and_derivative), r in T (the hi part of the split).
template <typename T>
SRD_HD void weighted_cutoff(T z, T r, T rc, T& zf, T& zdf) {
  T fc, dfc;
  cutoff_and_derivative(r, rc, fc, dfc);
  zf = z * fc;
  zdf = z * dfc;
}

// The pair term w = g Z f_c(r) of one channel, from g = exp(-eta t^2) and zf = Z f_c(r).
template <typename T>
SRD_HD T pair_weight(T g, T zf) {
  return g * zf;
}

// Its derivative w' = dw/dr = g (Z f_c'(r) - 2 eta t Z f_c(r)); two_eta = 2 eta in T.
template <typename T>
SRD_HD T pair_weight_derivative(T g, T zf, T zdf, T two_eta, T t) {
  return g * (zdf - two_eta * t * zf);
}

// The feature constants of a grid: 1 / rc^2 and a = 1 (cumulative L=1) or 0 (separate).
SRD_HD double inverse_cutoff_squared(double cutoff) { return 1.0 / (cutoff * cutoff); }
SRD_HD double cumulative_weight(bool cumulative) { return cumulative ? 1.0 : 0.0; }

// F0 = rho0^2.
SRD_HD double feature_l0(double rho0) { return rho0 * rho0; }

// The L=1 feature F1 = (a rho0^2 + rho_x^2 + rho_y^2 + rho_z^2) / rc^2.
SRD_HD double feature_l1(double rho0, double vx, double vy, double vz, double a, double inv_rc2) {
  return (a * rho0 * rho0 + vx * vx + vy * vy + vz * vz) * inv_rc2;
}

// The adjoint of rho0: A0 = dL/drho0 = 2 rho0 (G0 + a G1 / rc^2).
SRD_HD double adjoint_rho0(double rho0, double g0, double g1, double a, double inv_rc2) {
  return 2 * rho0 * (g0 + a * g1 * inv_rc2);
}

// The adjoint of rho_p: A_p = dL/drho_p = 2 rho_p G1 / rc^2.
SRD_HD double adjoint_rho_vec(double rho_p, double g1, double inv_rc2) { return 2 * rho_p * g1 * inv_rc2; }

// A0 + A . d: multiplied by w'(r), the channel's share of the radial part of dL/dd.
template <typename T>
SRD_HD T adjoint_along(T a0, T ax, T ay, T az, T dx, T dy, T dz) {
  return a0 + ax * dx + ay * dy + az * dz;
}

// One component of dL/dd = s d / r + v, from s = sum_c (A0_c + A_c . d) w'_c and
// v = sum_c w_c A_c (float64).
template <typename T>
SRD_HD double pair_gradient(T s, T d_k, double inv_r, T v_k) {
  return static_cast<double>(s) * d_k * inv_r + v_k;
}

}  // namespace srd
