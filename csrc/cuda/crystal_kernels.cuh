// Device-side view of a batch of crystals and the periodic image enumeration shared by the CUDA
// kernels (ead_kernels.cuh, neighbors_kernels.cuh). It produces what the CPU search of
// cpu/crystal_cpu.h produces, by another enumeration of the candidate images:
//   * the same pairs: every image (j, n) of every atom j of the centre's crystal with 0 < |d| <= radius,
//     d = r_j + n H - r_i, in float64 whatever the input dtype (float32 inputs are represented
//     exactly), from positions wrapped into the cell as on the CPU (integer offsets o with
//     pos = wrapped + o H, undone in the image shift s), in the same lexicographic (j, na, nb, nc)
//     order, with the same expressions for d and the same quadratic for the nc range of a line
//     (line_range, common/ead_math.h);
//   * but not the same candidate lines (j, na, nb). The CPU walks nested exact ranges (HostBatch::Frame:
//     na from the distance to the (b, c) plane, nb from the in-plane distance to the line through c),
//     so every line it visits crosses the sphere. A thread block needs a closed-form numbering of its
//     lines to hand them to threads with one prefix sum per round, so here the lines are those of the
//     plane-spacing box of each j (image_range, common/ead_math.h), numbered in the union of the boxes
//     over j (see "Enumeration" below), and line_range rejects the lines that miss the sphere.
// The box contains every line that crosses the sphere, so the pair sets agree up to rounding of pairs
// at exactly the search radius (whose terms vanish there, f_c(rc) = 0); the emulator test
// (tests/test_cuda_emulation.py) checks that the results agree.
//
// Preparation (two small kernels, no host synchronisation):
//   prep_cells_kernel  one thread per crystal: Cell<double> (inverse, plane spacings), validity flag;
//   prep_atoms_kernel  one thread per atom: crystal index (binary search in ptr), wrapped Cartesian and
//                      fractional positions and the integer offsets o with pos = wrapped + o @ H.
// Invalid crystals (singular or non-finite cell, non-finite positions, atoms outside their ptr range)
// are flagged instead of raising: the Python wrappers validate the values beforehand, and the kernels
// never synchronise the device for data-dependent checks. The kernels turn a flagged crystal into
// NaN outputs (ead) or index -1 (nearest_pairs).
//
// Enumeration (enumerate_pairs, one thread block per centre atom i): the images (j, na, nb, nc) of
// every atom j of i's crystal with 0 < |d| <= radius, d = r_j + n @ H - r_i, are produced in the CPU's
// lexicographic (j, na, nb, nc) order and compacted into a shared-memory tile of P slots:
//   * "lines" (j, na, nb) are numbered L = j * NA * NB + (na - alo) * NB + (nb - blo) inside the union
//     over j of the per-j plane-spacing boxes; a line outside its own j's box is empty (exactly the
//     CPU's candidate set);
//   * each round, thread t takes line base + t, solves the quadratic for its exact nc range (count c_t),
//     and a block-wide exclusive scan of c_t (warp shuffles, no atomics) gives every pair of the round
//     its position in the stream; pairs are written to the tile at those positions, in stream order;
//   * whenever the tile is full (and once at the end) the caller's process(fill) runs on it.
// The order of pairs in the stream, and hence the slot of every pair and every summation order built
// on it, depends only on the input: results are bitwise reproducible run to run.
//
// Device code only (no torch): the host glue lives in crystal_cuda.cuh. Compiled by nvcc, and by the
// host compiler under SRD_CUDA_EMULATION (selfcheck/cuda_emulation.h) for the CPU-only self-check.
#pragma once

#include <climits>
#include <cstdint>

#include "common/ead_math.h"

namespace srd {
namespace gpu {
// Everything here has internal linkage: each .cu file gets its own copy of the kernels (and of the
// host functions that launch them), so kernel registration never crosses translation units.
namespace {

// The dynamic shared memory of a kernel (the emulator provides its own).
#if defined(SRD_CUDA_EMULATION)
unsigned char* dynamic_smem();
#else
__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char srd_dynamic_smem[];
  return srd_dynamic_smem;
}
#endif

// A crystal whose search radius spans more than this many lattice planes in some direction is
// treated as invalid (NaN outputs): it keeps every image index inside `int` and every loop finite.
// (A 20 Angstrom cutoff reaches 10^6 planes only for plane spacings of 2e-5 Angstrom.)
constexpr double kMaxPlanesPerRadius = 1e6;

struct DeviceBatch {
  const Cell<double>* cells = nullptr;  // [B]
  const int* ok = nullptr;              // [B] 1: usable crystal, 0: flagged (see above)
  const double* wrapped = nullptr;      // [N, 3] Cartesian positions wrapped into the cell
  const double* frac = nullptr;         // [N, 3] wrapped fractional coordinates in [0, 1)
  const int64_t* offset = nullptr;      // [N, 3] integer o with position = wrapped + o @ H
  const int* crystal = nullptr;         // [N] crystal index of every atom
  const int64_t* ptr = nullptr;         // [B + 1]
  int64_t n_atoms = 0, n_crystals = 0;
};

// Tin: the input dtype (float or double); the geometry is float64.
template <typename Tin>
__global__ void prep_cells_kernel(const Tin* __restrict__ h, int64_t n_crystals, Cell<double>* __restrict__ cells,
                                  int* __restrict__ ok) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= n_crystals) return;
  Cell<double> c{};  // (a singular cell leaves inv unset: keep it defined)
  bool good = true;
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 3; ++k) {
      c.h[r][k] = static_cast<double>(h[9 * b + 3 * r + k]);
      good = good && isfinite(c.h[r][k]);
    }
  good = cell_setup(c) && good;
  for (int k = 0; k < 3; ++k) good = good && isfinite(c.spacing[k]) && c.spacing[k] > 0.0;
  cells[b] = c;
  ok[b] = good ? 1 : 0;
}

template <typename Tin>
__global__ void prep_atoms_kernel(const Tin* __restrict__ pos, const int64_t* __restrict__ ptr, int64_t n_atoms,
                                  int64_t n_crystals, const Cell<double>* __restrict__ cells, int* __restrict__ ok,
                                  double* __restrict__ wrapped, double* __restrict__ frac, int64_t* __restrict__ offset,
                                  int* __restrict__ crystal) {
  using T = double;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_atoms) return;
  // Crystal of atom i: the last b with ptr[b] <= i (skips empty crystals).
  int64_t lo = 0, hi = n_crystals - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) >> 1;
    if (ptr[mid] <= i) lo = mid;
    else hi = mid - 1;
  }
  const int64_t b = lo;
  crystal[i] = static_cast<int>(b);
  const Cell<T>& c = cells[b];
  const T p[3] = {static_cast<T>(pos[3 * i]), static_cast<T>(pos[3 * i + 1]), static_cast<T>(pos[3 * i + 2])};
  T f[3];
  to_fractional(c, p, f);
  bool good = ptr[b] <= i && i < ptr[b + 1];
  int64_t o[3];
  for (int k = 0; k < 3; ++k) {
    // As HostBatch (crystal_cpu.h); |f| < 2^52 keeps the integer offset exact.
    good = good && isfinite(f[k]) && fabs(f[k]) < T(4.0e15);
    T fl = floor(f[k]);
    T fw = f[k] - fl;
    if (fw >= T(1)) {  // f slightly below an integer can round up to exactly 1
      fw -= T(1);
      fl += T(1);
    }
    frac[3 * i + k] = fw;
    o[k] = good ? static_cast<int64_t>(fl) : 0;
    offset[3 * i + k] = o[k];
  }
  for (int k = 0; k < 3; ++k)
    wrapped[3 * i + k] =
        p[k] - (static_cast<T>(o[0]) * c.h[0][k] + static_cast<T>(o[1]) * c.h[1][k] + static_cast<T>(o[2]) * c.h[2][k]);
  if (!good) ok[b] = 0;  // every writer stores the same value
}

// ------------------------------------------------------------------------------------------------
// Block-wide exclusive prefix sum of one int per thread (blockDim.x a multiple of 32, <= 1024).
// s_warp: 32 ints of shared memory. Integer sums: the result is exact and order-free. Contains
// __syncthreads(): every thread of the block must call it.
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ int block_exclusive_scan(int v, int* s_warp, int& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  int x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) s_warp[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int w = lane < n_warps ? s_warp[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += y;
    }
    if (lane < n_warps) s_warp[lane] = w;  // inclusive sums of the warp totals
  }
  __syncthreads();
  const int before = warp > 0 ? s_warp[warp - 1] : 0;
  total = s_warp[n_warps - 1];
  __syncthreads();  // s_warp may be reused by the next call
  return before + x - v;
}

// ------------------------------------------------------------------------------------------------
// Geometry of one centre atom (float64; lives in shared memory; filled by setup_centre).
// ------------------------------------------------------------------------------------------------
struct CentreGeom {
  using T = double;
  int64_t first;           // first atom of the crystal
  int n;                   // atoms in the crystal
  int valid;               // 0: flagged crystal or malformed ptr (outputs NaN)
  T h[3][3];               // lattice vectors (rows)
  T wi[3], fi[3];          // wrapped Cartesian / fractional position of the centre
  int64_t oi[3];           // integer offset of the centre
  T vv;                    // |c|^2
  T ra, rb;                // radius / plane spacing along a and b
  T r2max;                 // radius^2
  int alo, ahi, blo, bhi;  // union over j of the per-j image boxes (na, nb)
};

// Thread 0 fills g for centre i (radius in Angstrom); after a barrier every thread then calls
// accumulate_centre_box. Contains no barrier: the caller synchronises.
__device__ void setup_centre(const DeviceBatch& batch, int64_t i, double radius, CentreGeom& g) {
  using T = double;
  const int b = batch.crystal[i];
  const int64_t first = batch.ptr[b], last = batch.ptr[b + 1];
  bool valid =
      batch.ok[b] != 0 && first >= 0 && first <= i && i < last && last <= batch.n_atoms && last - first <= INT_MAX;
  const Cell<T>& c = batch.cells[b];
  for (int r = 0; r < 3; ++r)
    for (int k = 0; k < 3; ++k) g.h[r][k] = c.h[r][k];
  for (int k = 0; k < 3; ++k) {
    g.wi[k] = batch.wrapped[3 * i + k];
    g.fi[k] = batch.frac[3 * i + k];
    g.oi[k] = batch.offset[3 * i + k];
  }
  const T* hc = c.h[2];
  g.vv = hc[0] * hc[0] + hc[1] * hc[1] + hc[2] * hc[2];
  g.ra = radius / c.spacing[0];
  g.rb = radius / c.spacing[1];
  const T rcn = radius / c.spacing[2];
  g.r2max = radius * radius;
  const T cap = static_cast<T>(kMaxPlanesPerRadius);
  valid = valid && isfinite(radius) && fabs(g.ra) <= cap && fabs(g.rb) <= cap && fabs(rcn) <= cap;
  g.first = first;
  g.n = valid ? static_cast<int>(last - first) : 0;
  g.valid = valid ? 1 : 0;
  g.alo = INT_MAX;
  g.ahi = INT_MIN;
  g.blo = INT_MAX;
  g.bhi = INT_MIN;
}

// Union over the crystal's atoms j of the CPU's per-j image boxes (shared-memory integer min/max:
// order-free). Every thread calls it after setup_centre + __syncthreads; the caller synchronises after.
__device__ void accumulate_centre_box(const DeviceBatch& batch, CentreGeom& g) {
  using T = double;
  int alo = INT_MAX, ahi = INT_MIN, blo = INT_MAX, bhi = INT_MIN;
  for (int jl = threadIdx.x; jl < g.n; jl += blockDim.x) {
    const T* fj = batch.frac + 3 * (g.first + jl);
    int lo, hi;
    image_range(g.ra, fj[0] - g.fi[0], lo, hi);
    if (lo <= hi) {
      alo = min(alo, lo);
      ahi = max(ahi, hi);
    }
    image_range(g.rb, fj[1] - g.fi[1], lo, hi);
    if (lo <= hi) {
      blo = min(blo, lo);
      bhi = max(bhi, hi);
    }
  }
  if (alo <= ahi) {
    atomicMin(&g.alo, alo);
    atomicMax(&g.ahi, ahi);
  }
  if (blo <= bhi) {
    atomicMin(&g.blo, blo);
    atomicMax(&g.bhi, bhi);
  }
}

// The pair stream of one centre, in tiles of P slots (see the header comment). For every pair:
//   write(slot, jl, na, nb, nc, d, r2)   jl = j - first; d = r_j + n H - r_i (T[3]); r2 = |d|^2.
// (d and r2 in float64.) Pairs with r2 > r2max or r2 <= 0 (rounding at the ends of the exact nc range, and the zero
// vector of i itself) are written too: the caller marks them as holes. Then, block-uniformly:
//   process(fill)   between two __syncthreads(), once per full tile and once for the last one.
// Every thread of the block must call this (it contains barriers); s_scan: 32 ints of shared memory.
template <int P, typename Write, typename Process>
__device__ void enumerate_pairs(const CentreGeom& g, const DeviceBatch& batch, int* s_scan, Write&& write,
                                Process&& process) {
  using T = double;
  const int NA = g.ahi >= g.alo ? g.ahi - g.alo + 1 : 0;
  const int NB = g.bhi >= g.blo ? g.bhi - g.blo + 1 : 0;
  const int64_t per_j = static_cast<int64_t>(NA) * NB;
  const int64_t n_lines = per_j * g.n;
  const int BD = blockDim.x;
  int fill = 0;
  for (int64_t base = 0; base < n_lines; base += BD) {
    const int64_t L = base + threadIdx.x;
    int cnt = 0, clo = 0, jl = 0, na = 0, nb = 0;
    T u[3] = {T(0), T(0), T(0)};
    if (L < n_lines) {
      jl = static_cast<int>(L / per_j);
      const int64_t rem = L - static_cast<int64_t>(jl) * per_j;
      const int64_t qa = rem / NB;
      na = g.alo + static_cast<int>(qa);
      nb = g.blo + static_cast<int>(rem - qa * NB);
      const int64_t j = g.first + jl;
      const T* fj = batch.frac + 3 * j;
      int alo, ahi, blo, bhi;
      image_range(g.ra, fj[0] - g.fi[0], alo, ahi);
      image_range(g.rb, fj[1] - g.fi[1], blo, bhi);
      if (na >= alo && na <= ahi && nb >= blo && nb <= bhi) {
        const T* wj = batch.wrapped + 3 * j;
        for (int k = 0; k < 3; ++k) {
          const T base_k = wj[k] - g.wi[k];
          u[k] = base_k + na * g.h[0][k] + nb * g.h[1][k];
        }
        const T uu = u[0] * u[0] + u[1] * u[1] + u[2] * u[2];
        const T uv = u[0] * g.h[2][0] + u[1] * g.h[2][1] + u[2] * g.h[2][2];
        int chi;
        if (line_range(uu, uv, g.vv, g.r2max, clo, chi)) cnt = chi - clo + 1;
      }
    }
    int total;
    const int off = block_exclusive_scan(cnt, s_scan, total);
    int done = 0;  // pairs of this round already placed (block-uniform, like fill and total)
    while (done < total) {
      const int take = min(total - done, P - fill);
      const int a = max(off, done), e = min(off + cnt, done + take);
      for (int idx = a; idx < e; ++idx) {
        const int nc = clo + (idx - off);
        T d[3];
        for (int k = 0; k < 3; ++k) d[k] = u[k] + nc * g.h[2][k];
        const T r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
        write(fill + (idx - done), jl, na, nb, nc, d, r2);
      }
      fill += take;
      done += take;
      if (fill == P) {
        __syncthreads();
        process(fill);
        __syncthreads();
        fill = 0;
      }
    }
  }
  if (fill > 0) {
    __syncthreads();
    process(fill);
    __syncthreads();
  }
}

// NaN of the kernel's type.
template <typename T>
__device__ __forceinline__ T quiet_nan();
template <>
__device__ __forceinline__ float quiet_nan<float>() {
  return __int_as_float(0x7fffffff);
}
template <>
__device__ __forceinline__ double quiet_nan<double>() {
  return __longlong_as_double(0x7ff8000000000000LL);
}

}  // namespace
}  // namespace gpu
}  // namespace srd
