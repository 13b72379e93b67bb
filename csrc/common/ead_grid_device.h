// The descriptor grid as the CUDA kernels see it: a fixed-size, trivially copyable mirror of EADGrid
// (ead_grid.h) that is passed to the kernels by value (`const __grid_constant__ DeviceGrid`, i.e. it
// lives in the kernel-parameter constant bank, 1.3 kB), and the device port of EADGrid::window().
//
// Only the CUDA sources include this header, and it includes no torch header (device code only; the
// CUDA sources are also compiled on the host by the CPU emulation of cuda/selfcheck). EADGrid itself
// stays host-only (it holds std::vectors); make_device_grid() in cuda/ead_cuda.cuh (the one builder,
// shared by the CUDA build and the emulator) copies one into a DeviceGrid.
#pragma once

#include <cmath>
#include <cstdint>

namespace srd {

// Size limits of the grids the CUDA kernels accept (the CPU kernels have none). The defaults of
// SPEC section 1 are 3 etas x 50 mus = 150 channels.
constexpr int kMaxDeviceEtas = 16;        // len(etas)
constexpr int kMaxDeviceMus = 128;        // len(mus)
constexpr int kMaxDeviceChannels = 2048;  // len(etas) * len(mus)

struct DeviceGrid {
  int n_eta = 0, n_mu = 0, n_channels = 0;
  int uniform = 0;  // mus = mu0 + k dmu (EADGrid::uniform)
  double mu0 = 0, dmu = 1;
  double cutoff = 0;  // r_c
  double reach = 0;   // EADGrid::reach: min(rc, max mu + max halfwidth)
  double skip = 0;    // keep a term iff eta (r - mu)^2 <= skip (+inf: dense)
  int lmax = 1;
  int cumulative = 1;
  double eta[kMaxDeviceEtas];
  double halfwidth[kMaxDeviceEtas];  // sqrt(skip / eta), +inf when dense
  double mu[kMaxDeviceMus];
};

#if defined(__CUDACC__) || defined(SRD_CUDA_EMULATION)
// Device port of EADGrid::window(): the centres k of one eta row that can be kept at distance r,
// [lo, hi] (hi < lo: none), widened by one centre on each side. As on the host, the window only
// bounds the loops; the kernels apply the skip predicate eta (r - mu)^2 <= skip to every term.
// `mus` may point to shared memory; the arithmetic (double, IEEE division, ceil/floor) is the host's.
__device__ __forceinline__ void device_window(double hw, const double* mus, int n_mu, bool uniform, double mu0,
                                              double dmu, double r, int& lo, int& hi) {
  if (!isfinite(hw)) {
    lo = 0;
    hi = n_mu - 1;
    return;
  }
  long long l, h;
  if (uniform) {
    l = static_cast<long long>(ceil((r - hw - mu0) / dmu)) - 1;
    h = static_cast<long long>(floor((r + hw - mu0) / dmu)) + 1;
  } else {
    // std::lower_bound(mus, r - hw) - 1 and std::upper_bound(mus, r + hw).
    const double xl = r - hw, xh = r + hw;
    int a = 0, b = n_mu;
    while (a < b) {
      const int m = (a + b) >> 1;
      if (mus[m] < xl) a = m + 1;
      else b = m;
    }
    l = a - 1;
    a = 0;
    b = n_mu;
    while (a < b) {
      const int m = (a + b) >> 1;
      if (!(xh < mus[m])) a = m + 1;
      else b = m;
    }
    h = a;
  }
  // Clamped to [0, n_mu] and [-1, n_mu - 1]: the same (possibly empty) set as the host's clamp, and
  // the values fit the 16-bit window table of the forward kernel.
  lo = static_cast<int>(l < 0 ? 0 : (l > n_mu ? n_mu : l));
  hi = static_cast<int>(h > n_mu - 1 ? n_mu - 1 : (h < -1 ? -1 : h));
}
#endif

}  // namespace srd
