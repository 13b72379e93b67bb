// Device code of srd::nearest_pairs on CUDA (no torch: the host glue is neighbors_cuda.cuh; the design
// is described there).
#pragma once

#include <climits>
#include <cstdint>
#include <limits>

#include "common/ead_math.h"
#include "cuda/crystal_kernels.cuh"

namespace srd {
namespace gpu {
namespace {

constexpr int kNearestThreads = 128;

__device__ __forceinline__ bool better(double r2, long long L, int nc, double br2, long long bL, int bnc) {
  return r2 < br2 || (r2 == br2 && (L < bL || (L == bL && nc < bnc)));
}

__global__ void __launch_bounds__(kNearestThreads)
    nearest_kernel(const DeviceBatch batch, int64_t* __restrict__ index, int64_t* __restrict__ shifts) {
  using T = double;  // geometry is float64 for both input dtypes, as on the CPU
  __shared__ T s_r2[kNearestThreads];
  __shared__ long long s_L[kNearestThreads];
  __shared__ int s_nc[kNearestThreads];
  const int64_t b = blockIdx.x;
  const int tid = threadIdx.x;
  const int64_t first = batch.ptr[b], last = batch.ptr[b + 1];
  const Cell<T>& c = batch.cells[b];
  const T inf = std::numeric_limits<T>::infinity();

  // Upper bound of the answer: the shortest lattice vector (as the CPU), inflated by 64 ulp.
  T best = inf;
  for (int r = 0; r < 3; ++r)
    best = min(best, sqrt(c.h[r][0] * c.h[r][0] + c.h[r][1] * c.h[r][1] + c.h[r][2] * c.h[r][2]));
  const T radius = best * (T(1) + T(64) * std::numeric_limits<T>::epsilon());
  const T r2max = radius * radius;
  const T ra = radius / c.spacing[0], rb = radius / c.spacing[1], rcn = radius / c.spacing[2];
  const T cap = static_cast<T>(kMaxPlanesPerRadius);
  const int64_t n = last - first;
  bool valid = batch.ok[b] != 0 && first >= 0 && n >= 1 && last <= batch.n_atoms && isfinite(radius) &&
               fabs(ra) <= cap && fabs(rb) <= cap && fabs(rcn) <= cap;
  // Box of (na, nb) over every fractional difference in (-1, 1).
  int alo = 0, ahi = -1, blo = 0, bhi = -1, dummy;
  image_range(ra, T(1), alo, dummy);
  image_range(ra, T(-1), dummy, ahi);
  image_range(rb, T(1), blo, dummy);
  image_range(rb, T(-1), dummy, bhi);
  const int64_t NA = valid && ahi >= alo ? ahi - alo + 1 : 0;
  const int64_t NB = valid && bhi >= blo ? bhi - blo + 1 : 0;
  const int64_t per_pair = NA * NB;
  // (n^2 NA NB < 2^62 for any crystal that passed the plane cap with n < 2^20 atoms.)
  valid = valid && static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(per_pair) < 4.0e18;
  const int64_t n_lines = valid ? n * n * per_pair : 0;
  const T* hc = c.h[2];
  const T vv = hc[0] * hc[0] + hc[1] * hc[1] + hc[2] * hc[2];

  T br2 = inf;
  long long bL = LLONG_MAX;
  int bnc = INT_MAX;
  for (int64_t L = tid; L < n_lines; L += kNearestThreads) {
    const int64_t ij = L / per_pair;
    const int64_t il = ij / n, jl = ij - il * n;
    if (jl < il) continue;  // each unordered pair once (its reverse has the same length)
    const int64_t rem = L - ij * per_pair;
    const int64_t qa = rem / NB;
    const int na = alo + static_cast<int>(qa), nb = blo + static_cast<int>(rem - qa * NB);
    const int64_t i = first + il, j = first + jl;
    const T* fi = batch.frac + 3 * i;
    const T* fj = batch.frac + 3 * j;
    int lo, hi;
    image_range(ra, fj[0] - fi[0], lo, hi);
    if (na < lo || na > hi) continue;
    image_range(rb, fj[1] - fi[1], lo, hi);
    if (nb < lo || nb > hi) continue;
    const T* wi = batch.wrapped + 3 * i;
    const T* wj = batch.wrapped + 3 * j;
    T u[3];
    for (int k = 0; k < 3; ++k) {
      const T base_k = wj[k] - wi[k];
      u[k] = base_k + na * c.h[0][k] + nb * c.h[1][k];
    }
    const T uu = u[0] * u[0] + u[1] * u[1] + u[2] * u[2];
    const T uv = u[0] * hc[0] + u[1] * hc[1] + u[2] * hc[2];
    int clo, chi;
    if (!line_range(uu, uv, vv, r2max, clo, chi)) continue;
    for (int nc = clo; nc <= chi; ++nc) {
      T d[3];
      for (int k = 0; k < 3; ++k) d[k] = u[k] + nc * hc[k];
      const T r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
      if (r2 > r2max || (r2 <= T(0) && i == j)) continue;  // coincident distinct atoms: d_min = 0
      if (better(r2, static_cast<long long>(L), nc, br2, bL, bnc)) {
        br2 = r2;
        bL = L;
        bnc = nc;
      }
    }
  }
  s_r2[tid] = br2;
  s_L[tid] = bL;
  s_nc[tid] = bnc;
  __syncthreads();
  for (int s = kNearestThreads / 2; s > 0; s >>= 1) {
    if (tid < s && better(s_r2[tid + s], s_L[tid + s], s_nc[tid + s], s_r2[tid], s_L[tid], s_nc[tid])) {
      s_r2[tid] = s_r2[tid + s];
      s_L[tid] = s_L[tid + s];
      s_nc[tid] = s_nc[tid + s];
    }
    __syncthreads();
  }
  if (tid != 0) return;
  const long long L = s_L[0];
  if (L == LLONG_MAX) {  // nothing found (invalid crystal)
    index[2 * b] = index[2 * b + 1] = -1;
    shifts[3 * b] = shifts[3 * b + 1] = shifts[3 * b + 2] = 0;
    return;
  }
  const int64_t ij = L / per_pair;
  const int64_t il = ij / n, jl = ij - il * n;
  const int64_t rem = L - ij * per_pair;
  const int64_t qa = rem / NB;
  const int64_t na = alo + qa, nb = blo + (rem - qa * NB), nc = s_nc[0];
  const int64_t i = first + il, j = first + jl;
  index[2 * b] = i;
  index[2 * b + 1] = j;
  const int64_t* oi = batch.offset + 3 * i;
  const int64_t* oj = batch.offset + 3 * j;
  shifts[3 * b] = na + oi[0] - oj[0];
  shifts[3 * b + 1] = nb + oi[1] - oj[1];
  shifts[3 * b + 2] = nc + oi[2] - oj[2];
}

}  // namespace
}  // namespace gpu
}  // namespace srd
