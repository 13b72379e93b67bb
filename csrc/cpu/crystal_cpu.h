// Host-side view of a batch of crystals and the periodic neighbour search used by every CPU kernel.
//
// Search: each crystal's atoms are wrapped into the cell (fractional coordinates in [0, 1)); for a
// centre i and an atom j the images n = (na, nb, nc) within the radius are enumerated with
// exact nested ranges: na from the distance to the (b, c) plane, nb from the in-plane distance to the
// line through c (Frame below), nc from the quadratic line_range (ead_math.h). Every image of
// every atom within the radius is visited exactly once, for any cell shape (triclinic, skewed, cells
// far smaller than the cutoff, one-atom cells). A cell list would not help here: the cells of these
// datasets are all smaller than the 20 Angstrom cutoff, so every atom of the cell is a neighbour of
// every other through some image, and the exact ranges already visit nothing outside the sphere.
// The CUDA kernels (cuda/crystal_kernels.cuh) visit the same images in the same order but take their
// candidate (na, nb) lines from plane-spacing boxes, which a thread block can number in closed form;
// see there.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <vector>

#include "common/ead_math.h"

namespace srd {

// Geometry is held in float64 whatever the input dtype: float32 inputs are represented exactly, and
// the pair distances then carry float64 rounding only.
struct HostBatch {
  int64_t n_atoms = 0, n_crystals = 0;
  const int64_t* ptr = nullptr;
  std::vector<double> pos;  // [N, 3] the input positions (unwrapped)
  std::vector<Cell<double>> cells;
  std::vector<double> wrapped;   // [N, 3] Cartesian positions wrapped into the cell
  std::vector<int64_t> offset;   // [N, 3] integer o with position = wrapped + o @ H
  std::vector<int64_t> crystal;  // [N] crystal index of each atom

  template <typename T>
  HostBatch(const at::Tensor& positions, const at::Tensor& cells_t, const at::Tensor& ptr_t, const char* op,
            const T* /*dtype tag*/) {
    n_atoms = positions.size(0);
    n_crystals = cells_t.size(0);
    ptr = ptr_t.data_ptr<int64_t>();
    TORCH_CHECK_VALUE(ptr[0] == 0 && ptr[n_crystals] == n_atoms, op, ": ptr must start at 0 and end at N = ", n_atoms,
                      ", got ptr[0] = ", ptr[0], ", ptr[-1] = ", ptr[n_crystals]);
    const T* pin = positions.data_ptr<T>();
    pos.assign(pin, pin + 3 * n_atoms);
    const T* h = cells_t.data_ptr<T>();
    cells.resize(n_crystals);
    wrapped.resize(3 * n_atoms);
    offset.resize(3 * n_atoms);
    crystal.resize(n_atoms);
    for (int64_t b = 0; b < n_crystals; ++b) {
      TORCH_CHECK_VALUE(ptr[b + 1] > ptr[b], op, ": crystal ", b, " is empty (ptr[", b, "] = ptr[", b + 1,
                        "] = ", ptr[b], "); every crystal needs at least one atom");
      Cell<double>& c = cells[b];
      for (int r = 0; r < 3; ++r)
        for (int k = 0; k < 3; ++k) c.h[r][k] = h[9 * b + 3 * r + k];
      TORCH_CHECK_VALUE(cell_setup(c), op, ": cells[", b, "] is singular (determinant ", c.det, ")");
      for (int64_t i = ptr[b]; i < ptr[b + 1]; ++i) {
        crystal[i] = b;
        double f[3];
        to_fractional(c, pos.data() + 3 * i, f);
        // Wrapping is only a convenience for the search (any integer offset gives the same pairs);
        // the image shifts it introduces are undone in s, so gradients see the input positions.
        for (int k = 0; k < 3; ++k) offset[3 * i + k] = static_cast<int64_t>(std::floor(f[k]));
        for (int k = 0; k < 3; ++k)
          wrapped[3 * i + k] = pos[3 * i + k] - (static_cast<double>(offset[3 * i]) * c.h[0][k] +
                                                 static_cast<double>(offset[3 * i + 1]) * c.h[1][k] +
                                                 static_cast<double>(offset[3 * i + 2]) * c.h[2][k]);
      }
    }
    build_frames();
  }

  // Per-crystal frame for the exact image ranges: n_bc = unit normal of the (b, c) plane, m = unit
  // vector in that plane perpendicular to c. A point P is within the radius of some P + nb b + nc c
  // only if |P . n_bc| <= radius (this fixes na), and then the in-plane distance of the line
  // {P + nb b + t c} to the origin, |(P + nb b) . m|, must be <= sqrt(radius^2 - (P . n_bc)^2)
  // (this fixes nb); nc then solves a quadratic (line_range). Every (na, nb) visited has a line that
  // actually crosses the sphere.
  struct Frame {
    double n_bc[3], m[3], a_n, b_m, vv, inv_vv;
  };
  std::vector<Frame> frames;

  void build_frames() {
    frames.resize(n_crystals);
    for (int64_t b = 0; b < n_crystals; ++b) {
      const Cell<double>& c = cells[b];
      Frame& f = frames[b];
      double bc[3];
      cross3(c.h[1], c.h[2], bc);
      const double nb = std::sqrt(bc[0] * bc[0] + bc[1] * bc[1] + bc[2] * bc[2]);
      for (int k = 0; k < 3; ++k) f.n_bc[k] = bc[k] / nb;
      double mm[3];
      cross3(c.h[2], f.n_bc, mm);  // in the (b, c) plane, perpendicular to c
      const double mn = std::sqrt(mm[0] * mm[0] + mm[1] * mm[1] + mm[2] * mm[2]);
      for (int k = 0; k < 3; ++k) f.m[k] = mm[k] / mn;
      f.a_n = c.h[0][0] * f.n_bc[0] + c.h[0][1] * f.n_bc[1] + c.h[0][2] * f.n_bc[2];
      f.b_m = c.h[1][0] * f.m[0] + c.h[1][1] * f.m[1] + c.h[1][2] * f.m[2];
      f.vv = c.h[2][0] * c.h[2][0] + c.h[2][1] * c.h[2][1] + c.h[2][2] * c.h[2][2];
      f.inv_vv = 1.0 / f.vv;
    }
  }

  // Refuses (ValueError) a crystal whose neighbour search within `radius` would be unreasonable: more
  // than kMaxNeighboursPerAtom images per atom by the plane-spacing bound (ead_math.h). Called before
  // any per-pair allocation.
  void check_image_bound(double radius, const char* op) const {
    for (int64_t b = 0; b < n_crystals; ++b) {
      const double n = static_cast<double>(ptr[b + 1] - ptr[b]);
      const double bound = n * image_count_bound(cells[b], radius);
      TORCH_CHECK_VALUE(bound <= kMaxNeighboursPerAtom, op, ": cells[", b, "] is too small or too flat for a ", radius,
                        " Angstrom neighbour search: plane spacings ", cells[b].spacing[0], ", ", cells[b].spacing[1],
                        ", ", cells[b].spacing[2], " Angstrom, volume ", std::fabs(cells[b].det), " Angstrom^3 for ", n,
                        " atoms give up to ", bound, " periodic neighbours per atom (the limit is ",
                        kMaxNeighboursPerAtom, "); the cell is degenerate or unphysically dense");
    }
  }

  // Visits every (j, image) of centre i with 0 < |d| <= radius, d = r_j + n @ H - r_i (float64),
  // calling visit(j, d[3], r2, s[3]) with s the integer shift relative to the ORIGINAL (unwrapped)
  // positions: d = pos_j - pos_i + s @ H, which is what the cell gradient needs. With keep_coincident,
  // other atoms at distance 0 (coincident with i) are visited too (only the atom itself is skipped):
  // the nearest-pair search needs them (d_min = 0), the descriptor must not (d / |d| is undefined).
  template <typename Visit>
  void for_each_neighbor(int64_t i, double radius, Visit&& visit, bool keep_coincident = false) const {
    const int64_t b = crystal[i];
    const Cell<double>& c = cells[b];
    const Frame& f = frames[b];
    const double r2max = radius * radius;
    // Rounding slack: ranges are widened by this many lattice steps' worth; r2 <= r2max filters.
    const double eps = 1e-9 * (1.0 + radius);
    const double* ha = c.h[0];
    const double* hb = c.h[1];
    const double* hc = c.h[2];
    for (int64_t j = ptr[b]; j < ptr[b + 1]; ++j) {
      double base[3];
      for (int k = 0; k < 3; ++k) base[k] = wrapped[3 * j + k] - wrapped[3 * i + k];
      const double base_n = base[0] * f.n_bc[0] + base[1] * f.n_bc[1] + base[2] * f.n_bc[2];
      // |base_n + na a_n| <= radius
      double lo_a = (-radius - eps - base_n) / f.a_n, hi_a = (radius + eps - base_n) / f.a_n;
      if (lo_a > hi_a) std::swap(lo_a, hi_a);
      const int alo = static_cast<int>(std::ceil(lo_a)), ahi = static_cast<int>(std::floor(hi_a));
      for (int na = alo; na <= ahi; ++na) {
        double p[3];
        for (int k = 0; k < 3; ++k) p[k] = base[k] + na * ha[k];
        const double pn = base_n + na * f.a_n;
        const double rem = r2max - pn * pn;
        if (rem < -eps) continue;
        const double r_in = std::sqrt(std::max(rem, 0.0)) + eps;
        const double pm = p[0] * f.m[0] + p[1] * f.m[1] + p[2] * f.m[2];
        double lo_b = (-r_in - pm) / f.b_m, hi_b = (r_in - pm) / f.b_m;
        if (lo_b > hi_b) std::swap(lo_b, hi_b);
        const int blo = static_cast<int>(std::ceil(lo_b)), bhi = static_cast<int>(std::floor(hi_b));
        for (int nb = blo; nb <= bhi; ++nb) {
          double u[3];
          for (int k = 0; k < 3; ++k) u[k] = p[k] + nb * hb[k];
          const double uu = u[0] * u[0] + u[1] * u[1] + u[2] * u[2];
          const double uv = u[0] * hc[0] + u[1] * hc[1] + u[2] * hc[2];
          int clo, chi;
          if (!line_range(uu, uv, f.vv, r2max, clo, chi)) continue;
          for (int nc = clo; nc <= chi; ++nc) {
            double d[3];
            for (int k = 0; k < 3; ++k) d[k] = u[k] + nc * hc[k];
            const double r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
            if (r2 > r2max || (r2 <= 0.0 && (j == i || !keep_coincident))) continue;
            const int64_t s[3] = {na + offset[3 * i] - offset[3 * j], nb + offset[3 * i + 1] - offset[3 * j + 1],
                                  nc + offset[3 * i + 2] - offset[3 * j + 2]};
            visit(j, d, r2, s);
          }
        }
      }
    }
  }
};

}  // namespace srd
