// Host-side view of a batch of crystals and the periodic neighbour search used by every CPU kernel.
//
// Search: each crystal's atoms are wrapped into the cell (fractional coordinates in [0, 1)); for a
// centre i and an atom j the images n = (na, nb, nc) within the radius are enumerated with
// plane-spacing bounds on na, nb and an exact quadratic range for nc (ead_math.h). Every image of
// every atom within the radius is visited exactly once, for any cell shape (triclinic, skewed, cells
// far smaller than the cutoff, one-atom cells). A cell list would not help here: the cells of these
// datasets are all smaller than the 20 Angstrom cutoff, so every atom of the cell is a neighbour of
// every other through some image, and the exact ranges already visit nothing outside the sphere.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <vector>

#include "common/ead_math.h"

namespace srd {

template <typename T>
struct HostBatch {
  int64_t n_atoms = 0, n_crystals = 0;
  const int64_t* ptr = nullptr;
  std::vector<Cell<T>> cells;
  std::vector<T> wrapped;        // [N, 3] Cartesian positions wrapped into the cell
  std::vector<T> frac;           // [N, 3] wrapped fractional coordinates in [0, 1)
  std::vector<int64_t> offset;   // [N, 3] integer o with position = wrapped + o @ H
  std::vector<int64_t> crystal;  // [N] crystal index of each atom

  HostBatch(const at::Tensor& positions, const at::Tensor& cells_t, const at::Tensor& ptr_t,
            const char* op) {
    n_atoms = positions.size(0);
    n_crystals = cells_t.size(0);
    ptr = ptr_t.data_ptr<int64_t>();
    TORCH_CHECK_VALUE(ptr[0] == 0 && ptr[n_crystals] == n_atoms, op, ": ptr must start at 0 and end at N = ",
                      n_atoms, ", got ptr[0] = ", ptr[0], ", ptr[-1] = ", ptr[n_crystals]);
    const T* pos = positions.data_ptr<T>();
    const T* h = cells_t.data_ptr<T>();
    cells.resize(n_crystals);
    wrapped.resize(3 * n_atoms);
    frac.resize(3 * n_atoms);
    offset.resize(3 * n_atoms);
    crystal.resize(n_atoms);
    for (int64_t b = 0; b < n_crystals; ++b) {
      TORCH_CHECK_VALUE(ptr[b + 1] > ptr[b], op, ": crystal ", b, " is empty (ptr[", b, "] = ptr[", b + 1,
                        "] = ", ptr[b], "); every crystal needs at least one atom");
      Cell<T>& c = cells[b];
      for (int r = 0; r < 3; ++r)
        for (int k = 0; k < 3; ++k) c.h[r][k] = h[9 * b + 3 * r + k];
      TORCH_CHECK_VALUE(cell_setup(c), op, ": cells[", b, "] is singular (determinant ", c.det, ")");
      for (int64_t i = ptr[b]; i < ptr[b + 1]; ++i) {
        crystal[i] = b;
        T f[3];
        to_fractional(c, pos + 3 * i, f);
        for (int k = 0; k < 3; ++k) {
          T fl = std::floor(f[k]);
          T fw = f[k] - fl;
          if (fw >= T(1)) {  // f slightly below an integer can round up to exactly 1
            fw -= T(1);
            fl += T(1);
          }
          frac[3 * i + k] = fw;
          offset[3 * i + k] = static_cast<int64_t>(fl);
        }
        for (int k = 0; k < 3; ++k)
          wrapped[3 * i + k] = pos[3 * i + k] - (static_cast<T>(offset[3 * i]) * c.h[0][k] +
                                                 static_cast<T>(offset[3 * i + 1]) * c.h[1][k] +
                                                 static_cast<T>(offset[3 * i + 2]) * c.h[2][k]);
      }
    }
  }

  // Visits every (j, image) of centre i with 0 < |d| <= radius, d = r_j + n @ H - r_i, calling
  //   visit(j, d[3], r2, s[3])  with s the integer shift relative to the ORIGINAL (unwrapped)
  // positions: d = pos_j - pos_i + s @ H, which is what the cell gradient needs.
  template <typename Visit>
  void for_each_neighbor(int64_t i, T radius, Visit&& visit) const {
    const int64_t b = crystal[i];
    const Cell<T>& c = cells[b];
    const T r2max = radius * radius;
    const T* hc = c.h[2];
    const T vv = hc[0] * hc[0] + hc[1] * hc[1] + hc[2] * hc[2];
    const T ra = radius / c.spacing[0], rb = radius / c.spacing[1];
    for (int64_t j = ptr[b]; j < ptr[b + 1]; ++j) {
      T base[3];
      for (int k = 0; k < 3; ++k) base[k] = wrapped[3 * j + k] - wrapped[3 * i + k];
      const T dfa = frac[3 * j] - frac[3 * i], dfb = frac[3 * j + 1] - frac[3 * i + 1];
      int alo, ahi, blo, bhi;
      image_range(ra, dfa, alo, ahi);
      image_range(rb, dfb, blo, bhi);
      for (int na = alo; na <= ahi; ++na) {
        for (int nb = blo; nb <= bhi; ++nb) {
          T u[3];
          for (int k = 0; k < 3; ++k) u[k] = base[k] + na * c.h[0][k] + nb * c.h[1][k];
          const T uu = u[0] * u[0] + u[1] * u[1] + u[2] * u[2];
          const T uv = u[0] * hc[0] + u[1] * hc[1] + u[2] * hc[2];
          int clo, chi;
          if (!line_range(uu, uv, vv, r2max, clo, chi)) continue;
          for (int nc = clo; nc <= chi; ++nc) {
            T d[3];
            for (int k = 0; k < 3; ++k) d[k] = u[k] + nc * hc[k];
            const T r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
            if (r2 > r2max || r2 <= T(0)) continue;
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
