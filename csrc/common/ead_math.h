// Math shared by the CPU and CUDA kernels of the EAD descriptor: cutoff function, Gaussians,
// a vectorisable exp, 3x3 cell helpers and the periodic-image bounds. The per-pair terms built on
// them (w, w', adjoints, features) are in ead_pair.h.
//
// Everything here is header-only and `SRD_HD` (host + device) so that both back ends compute
// exactly the same expressions.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SRD_HD __host__ __device__ __forceinline__
#else
#define SRD_HD inline
#endif

namespace srd {

#if !defined(__CUDA_ARCH__)
using std::ceil;
using std::cos;
using std::fabs;
using std::floor;
using std::sin;
using std::sqrt;
#endif

constexpr double kPi = 3.14159265358979323846;

// ------------------------------------------------------------------------------------------
// Cutoff f_c(r) = 0.5 (cos(pi r / rc) + 1) for r <= rc (not squared; SPEC section 1) and its
// derivative f_c'(r) = -0.5 (pi / rc) sin(pi r / rc).
//
// With y = pi r / (2 rc) in [0, pi/2]:  f_c = cos^2(y),  f_c' = -(pi / rc) sin(y) cos(y).
// On the host, sin and cos of y come from Taylor polynomials around pi/4 (|y - pi/4| <= pi/4;
// remainder < 3e-9 in float, < 5e-17 in double) so that the pair loops vectorise; on the device
// the hardware sincos is used.
// ------------------------------------------------------------------------------------------
template <typename T>
SRD_HD void sincos_quarter(T u, T& s, T& c);  // sin, cos of (pi/4 + u), |u| <= pi/4

template <>
SRD_HD void sincos_quarter<float>(float u, float& s, float& c) {
  const float u2 = u * u;
  float ps = -2.50521084e-8f;     // -1/11!
  ps = ps * u2 + 2.75573192e-6f;  // 1/9!
  ps = ps * u2 - 1.98412698e-4f;  // -1/7!
  ps = ps * u2 + 8.33333333e-3f;  // 1/5!
  ps = ps * u2 - 1.66666667e-1f;  // -1/3!
  const float su = u + u * u2 * ps;
  float pc = 2.08767570e-9f;      // 1/12!
  pc = pc * u2 - 2.75573192e-7f;  // -1/10!
  pc = pc * u2 + 2.48015873e-5f;  // 1/8!
  pc = pc * u2 - 1.38888889e-3f;  // -1/6!
  pc = pc * u2 + 4.16666667e-2f;  // 1/4!
  pc = pc * u2 - 0.5f;            // -1/2!
  const float cu = 1.0f + u2 * pc;
  const float h = 0.70710678118654752f;
  s = h * (cu + su);
  c = h * (cu - su);
}

template <>
SRD_HD void sincos_quarter<double>(double u, double& s, double& c) {
  const double u2 = u * u;
  double ps = 1.0 / 355687428096000.0;   // 1/17!
  ps = ps * u2 - 1.0 / 1307674368000.0;  // -1/15!
  ps = ps * u2 + 1.0 / 6227020800.0;     // 1/13!
  ps = ps * u2 - 1.0 / 39916800.0;       // -1/11!
  ps = ps * u2 + 1.0 / 362880.0;         // 1/9!
  ps = ps * u2 - 1.0 / 5040.0;           // -1/7!
  ps = ps * u2 + 1.0 / 120.0;            // 1/5!
  ps = ps * u2 - 1.0 / 6.0;              // -1/3!
  const double su = u + u * u2 * ps;
  double pc = -1.0 / 6402373705728000.0;  // -1/18!
  pc = pc * u2 + 1.0 / 20922789888000.0;  // 1/16!
  pc = pc * u2 - 1.0 / 87178291200.0;     // -1/14!
  pc = pc * u2 + 1.0 / 479001600.0;       // 1/12!
  pc = pc * u2 - 1.0 / 3628800.0;         // -1/10!
  pc = pc * u2 + 1.0 / 40320.0;           // 1/8!
  pc = pc * u2 - 1.0 / 720.0;             // -1/6!
  pc = pc * u2 + 1.0 / 24.0;              // 1/4!
  pc = pc * u2 - 0.5;                     // -1/2!
  const double cu = 1.0 + u2 * pc;
  const double h = 0.70710678118654752440;
  s = h * (cu + su);
  c = h * (cu - su);
}

template <typename T>
SRD_HD void cutoff_and_derivative(T r, T rc, T& fc, T& dfc) {
  const T y = static_cast<T>(kPi / 2) * (r / rc);
  T s, c;
#if defined(__CUDA_ARCH__)
  sincos(y, &s, &c);
#else
  sincos_quarter<T>(y - static_cast<T>(kPi / 4), s, c);
#endif
  fc = c * c;
  dfc = -(static_cast<T>(kPi) / rc) * s * c;
}

// ------------------------------------------------------------------------------------------
// exp(x) for x <= 88 (float) / 709 (double), written with plain arithmetic so that compilers vectorise the loops that
// call it (libm's exp is an opaque call). Cody-Waite range reduction x = n ln2 + t, |t| <= ln2/2,
// a polynomial for exp(t), and 2^n assembled in the exponent bits. Accuracy: ~1 ulp (float: the
// Cephes expf polynomial; double: Taylor to degree 13, remainder < 5e-18). Results below the
// smallest normal number are flushed to 0, which is also what the dense sums see in practice
// (every such term is below exp(-87) in float32 or exp(-708) in float64).
// ------------------------------------------------------------------------------------------
SRD_HD float exp_fast(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  const float lo = -87.0f;
  const bool under = x < lo;
  x = under ? lo : x;
  // kd = round(x / ln2) + 1.5 * 2^23: the integer sits in the low mantissa bits of kd, so the
  // exponent bits of 2^n are (bits(kd) + 127) << 23 (mod 2^32) with no float->int conversion.
  const float shifter = 12582912.0f;
  const float kd = x * 1.44269504088896341f + shifter;
  uint32_t kbits;
  std::memcpy(&kbits, &kd, sizeof(kbits));
  const float n = kd - shifter;
  float t = x - n * 0.693359375f;
  t = t - n * (-2.12194440e-4f);
  const float z = t * t;
  float p = 1.9875691500E-4f;
  p = p * t + 1.3981999507E-3f;
  p = p * t + 8.3334519073E-3f;
  p = p * t + 4.1665795894E-2f;
  p = p * t + 1.6666665459E-1f;
  p = p * t + 5.0000001201E-1f;
  p = p * z + t + 1.0f;
  const uint32_t bits = (kbits + 127u) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return under ? 0.0f : p * scale;
#endif
}

SRD_HD double exp_fast(double x) {
#if defined(__CUDA_ARCH__)
  return exp(x);
#else
  const double lo = -708.0;
  const bool under = x < lo;
  x = under ? lo : x;
  const double shifter = 6755399441055744.0;  // 1.5 * 2^52 (see the float version)
  const double kd = x * 1.4426950408889634074 + shifter;
  uint64_t kbits;
  std::memcpy(&kbits, &kd, sizeof(kbits));
  const double n = kd - shifter;
  double t = x - n * 6.93147180369123816490e-01;  // ln2 hi
  t = t - n * 1.90821492927058770002e-10;         // ln2 lo
  // Taylor series of exp(t), |t| <= 0.347, Horner form.
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * t + 1.0 / 479001600.0;  // 1/12!
  p = p * t + 1.0 / 39916800.0;   // 1/11!
  p = p * t + 1.0 / 3628800.0;    // 1/10!
  p = p * t + 1.0 / 362880.0;     // 1/9!
  p = p * t + 1.0 / 40320.0;      // 1/8!
  p = p * t + 1.0 / 5040.0;       // 1/7!
  p = p * t + 1.0 / 720.0;        // 1/6!
  p = p * t + 1.0 / 120.0;        // 1/5!
  p = p * t + 1.0 / 24.0;         // 1/4!
  p = p * t + 1.0 / 6.0;          // 1/3!
  p = p * t + 0.5;                // 1/2!
  p = p * t + 1.0;
  p = p * t + 1.0;
  const uint64_t bits = (kbits + 1023u) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return under ? 0.0 : p * scale;
#endif
}

// ------------------------------------------------------------------------------------------
// 3x3 cells. A cell is stored row-major with rows = lattice vectors a, b, c (Angstrom).
// Cartesian r = f @ H (f fractional, a row vector).
// ------------------------------------------------------------------------------------------
template <typename T>
struct Cell {
  T h[3][3];     // lattice vectors (rows)
  T inv[3][3];   // H^{-1}: f = r @ inv
  T spacing[3];  // distance between lattice planes spanned by the other two vectors = V / |b x c| ...
  T det;
};

template <typename T>
SRD_HD void cross3(const T* a, const T* b, T* out) {
  out[0] = a[1] * b[2] - a[2] * b[1];
  out[1] = a[2] * b[0] - a[0] * b[2];
  out[2] = a[0] * b[1] - a[1] * b[0];
}

// Fills inverse, determinant and plane spacings from h. Returns false for a singular cell.
template <typename T>
SRD_HD bool cell_setup(Cell<T>& c) {
  T bc[3], ca[3], ab[3];
  cross3(c.h[1], c.h[2], bc);
  cross3(c.h[2], c.h[0], ca);
  cross3(c.h[0], c.h[1], ab);
  const T det = c.h[0][0] * bc[0] + c.h[0][1] * bc[1] + c.h[0][2] * bc[2];
  c.det = det;
  if (!(fabs(det) > static_cast<T>(0))) return false;
  // inv[:, 0] = (b x c)/det, inv[:, 1] = (c x a)/det, inv[:, 2] = (a x b)/det
  for (int k = 0; k < 3; ++k) {
    c.inv[k][0] = bc[k] / det;
    c.inv[k][1] = ca[k] / det;
    c.inv[k][2] = ab[k] / det;
  }
  const T vol = fabs(det);
  c.spacing[0] = vol / sqrt(bc[0] * bc[0] + bc[1] * bc[1] + bc[2] * bc[2]);
  c.spacing[1] = vol / sqrt(ca[0] * ca[0] + ca[1] * ca[1] + ca[2] * ca[2]);
  c.spacing[2] = vol / sqrt(ab[0] * ab[0] + ab[1] * ab[1] + ab[2] * ab[2]);
  return true;
}

// Fractional coordinates of a Cartesian position: f = r @ inv.
template <typename T>
SRD_HD void to_fractional(const Cell<T>& c, const T* r, T* f) {
  for (int k = 0; k < 3; ++k) f[k] = r[0] * c.inv[0][k] + r[1] * c.inv[1][k] + r[2] * c.inv[2][k];
}

// ------------------------------------------------------------------------------------------
// Periodic images. For a pair with fractional difference df (wrapped into (-1, 1)) the image
// n = (na, nb, nc) can be within `radius` only if |df_k + n_k| * spacing_k <= radius for every k
// (the distance of a point to the lattice planes never exceeds its length). So
//     n_k in [ceil(-radius/spacing_k - df_k), floor(radius/spacing_k - df_k)].
// For fixed (na, nb) the exact range of nc with |u + nc c| <= radius solves a quadratic, so the
// innermost loop visits only true neighbours (plus rounding at the two ends, filtered by r <= rc).
// ------------------------------------------------------------------------------------------
// Upper bound of the periodic images of one atom within `radius` (for any fractional difference):
// the plane-spacing box, prod_k (2 radius / spacing_k + 2). The work and memory of a neighbour search
// grow with it (as 1 / volume for small cells), so the ops refuse crystals whose bound times their atom
// count exceeds kMaxNeighboursPerAtom, before allocating anything (a one-atom cell with a = 0.02 A
// would otherwise need ~4e9 neighbours, 8+ GB). Real crystals stay far below: ~1e4 per atom for a
// 20 A cutoff in the benchmarks (about 6,000 for a 20-atom MP-20 cell).
constexpr double kMaxNeighboursPerAtom = 4e6;

template <typename T>
SRD_HD double image_count_bound(const Cell<T>& c, double radius) {
  double bound = 1.0;
  for (int k = 0; k < 3; ++k) bound *= 2.0 * radius / static_cast<double>(c.spacing[k]) + 2.0;
  return bound;
}

template <typename T>
SRD_HD void image_range(T radius_over_spacing, T df, int& lo, int& hi) {
  // A relative slack of 1e-9 keeps the range a superset despite rounding; r <= rc filters after.
  const T s = radius_over_spacing * static_cast<T>(1 + 1e-9) + static_cast<T>(1e-9);
  lo = static_cast<int>(ceil(-s - df));
  hi = static_cast<int>(floor(s - df));
}

// Range of integer t with |u + t v|^2 <= radius^2, given |v|^2 = vv, u.v = uv, |u|^2 = uu.
// Returns false when empty.
template <typename T>
SRD_HD bool line_range(T uu, T uv, T vv, T radius2, int& lo, int& hi) {
  const T disc = uv * uv - vv * (uu - radius2);
  if (disc < 0) return false;
  const T sq = sqrt(disc);
  const T slack = static_cast<T>(1e-9) * (fabs(uv) + sq) / vv + static_cast<T>(1e-9);
  lo = static_cast<int>(ceil((-uv - sq) / vv - slack));
  hi = static_cast<int>(floor((-uv + sq) / vv + slack));
  return lo <= hi;
}

}  // namespace srd
