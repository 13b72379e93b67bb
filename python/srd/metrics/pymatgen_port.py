"""A vectorised port of the parts of pymatgen that CrystalNN fingerprints spend their time in.

Mirrors pymatgen 2026.10.24 (``pymatgen.analysis.local_env``): ``LocalStructOrderParams.get_order_parameters``
(the geometric order parameters of matminer's "ops" preset, with NumPy over neighbour triplets),
``VoronoiNN.get_voronoi_polyhedra`` (facet solid angles and volumes) and ``CrystalNN.get_nn_data``
(cation_anion=False). Kept apart from the metric API (:mod:`srd.metrics.fingerprints`) because it
follows pymatgen's code line by line: when pymatgen changes those functions, this module is what to
re-read. tests/test_metrics.py compares the result with matminer's own featurizer on real crystals, so a
drift shows up there.
"""

from __future__ import annotations

import math

import numpy as np
from pymatgen.core import Structure

#: The pymatgen version this port was written against (recorded in fingerprint_settings()).
MIRRORS_PYMATGEN = "2026.10.24"

_MAX_TYPES = {
    "T", "tri_pyr", "see_saw_rect", "sq_pyr", "tri_bipyr", "sq_bipyr", "pent_pyr", "hex_pyr", "pent_bipyr",
    "hex_bipyr", "oct_max", "tri_plan_max", "tet_max", "sq_plan_max", "pent_plan_max", "cuboct_max",
    "hex_plan_max",
}  # fmt: skip
_BIPYR_SOUTH = {
    "tri_bipyr",
    "sq_bipyr",
    "pent_bipyr",
    "hex_bipyr",
    "oct_max",
    "sq_plan_max",
    "hex_plan_max",
    "see_saw_rect",
}
_PYR = {"T", "tri_pyr", "sq_pyr", "pent_pyr", "hex_pyr"}
_BOOPS = {"q2", "q4", "q6"}
_BIPYR_INNER = {"tri_bipyr", "sq_bipyr", "pent_bipyr", "hex_bipyr", "oct_max", "sq_plan_max", "hex_plan_max"}
#: Geometric order parameters implemented by :func:`_geometric_ops` (all that the "ops" preset uses).
_VECTORISED = {"bent", "bcc"} | _MAX_TYPES


# ------------------------------------------------------------------------------------------------
# Vectorised Peters-style order parameters (pymatgen LocalStructOrderParams.get_order_parameters)
# ------------------------------------------------------------------------------------------------
def _gauss(x):
    return np.exp(-0.5 * x * x)


def _geometric_ops(unit: np.ndarray, specs: list[tuple[str, dict]]) -> list[float | None]:
    """Order parameters of one centre whose neighbours lie along the unit vectors ``unit`` [n, 3].

    Reproduces, type by type, the j (north pole) / k (prime meridian) / m loops of pymatgen's
    ``get_order_parameters`` for a LocalStructOrderParams object holding a single type.
    """
    n = unit.shape[0]
    pi = math.pi
    ipi = 1 / math.pi
    gram = unit @ unit.T  # gram[j, k] = <u_j, u_k>
    theta = np.arccos(np.clip(gram, -1.0, 1.0))  # theta[j, k]: angle of k seen from north pole j
    # Gram-Schmidt: the part of u_k orthogonal to u_j (row j = north pole)
    diag = np.diag(gram)
    xvec = unit[None, :, :] - (gram / diag[:, None])[:, :, None] * unit[:, None, :]
    xnorm = np.linalg.norm(xvec, axis=2)
    flag = xnorm < 1e-12
    xhat = xvec / np.where(flag, 1.0, xnorm)[:, :, None]
    # phi[j, k, m]: angle between the projections of u_k and u_m on the plane normal to u_j
    phi = np.arccos(np.clip(np.einsum("jkc,jmc->jkm", xhat, xhat), -1.0, 1.0))
    phi = np.where(flag[:, None, :], 0.0, phi)

    eye = np.eye(n, dtype=bool)
    pair = ~eye  # j != k
    m_active = pair[:, :, None] & pair[:, None, :] & pair[None, :, :]  # j, k, m distinct
    m_active &= ~flag[:, :, None]  # the m loop is skipped when the prime meridian is undefined
    inner = m_active & ~flag[:, None, :]  # plane-angle terms need a defined projection of u_m
    thk = theta[:, :, None]  # theta_k broadcast over m
    thm = theta[:, None, :]  # theta_m broadcast over k
    jlt = np.triu(np.ones((n, n), dtype=bool), 1)  # j < k

    out: list[float | None] = []
    for typ, p in specs:
        qk = np.zeros((n, n))  # k-loop contributions
        nk = np.zeros((n, n))
        qm = np.zeros((n, n, n))  # m-loop contributions
        nm = np.zeros((n, n, n))
        if typ == "bent":
            qk = _gauss(p["IGW_TA"] * (theta * ipi - p["TA"]))
            nk = np.ones((n, n))
        elif typ in ("tri_plan_max", "tet_max"):
            qk = _gauss(p["IGW_TA"] * (theta * ipi - p["TA"]))
            nk = np.ones((n, n))
            val = _gauss(p["IGW_TA"] * (thm * ipi - p["TA"])) * np.cos(p["fac_AA"] * phi) ** p["exp_cos_AA"]
            qm = np.where(inner, val, 0.0)
            nm = inner.astype(float)
        elif typ == "pent_plan_max":
            qk = _gauss(p["IGW_TA"] * (theta * ipi - np.where(theta <= p["TA"] * pi, 0.4, 0.8)))
            nk = np.ones((n, n))
            tmp2 = p["IGW_TA"] * (thm * ipi - np.where(thm <= p["TA"] * pi, 0.4, 0.8))
            c = np.cos(phi)
            qm = np.where(inner, _gauss(tmp2) * c * c, 0.0)
            nm = inner.astype(float)
        elif typ in _PYR:
            qk = _gauss(p["IGW_EP"] * (theta * ipi - 0.5))
            nk = np.ones((n, n))
            val = np.cos(p["fac_AA"] * phi) ** p["exp_cos_AA"] * _gauss(p["IGW_EP"] * (thm * ipi - 0.5))
            qm = np.where(inner, val, 0.0)
            nm = inner.astype(float)
        elif typ in _BIPYR_SOUTH:
            spp = p["min_SPP"]
            below = theta < spp
            if typ == "hex_plan_max":
                ek = p["IGW_TA"] * (np.abs(theta * ipi - 0.5) - p["TA"])
                em = p["IGW_TA"] * (np.abs(thm * ipi - 0.5) - p["TA"])
            else:
                ek = p["IGW_EP"] * (theta * ipi - 0.5)
                em = p["IGW_EP"] * (thm * ipi - 0.5)
            qk = np.where(below, _gauss(ek), 0.0)
            nk = below.astype(float)
            south = m_active & (thm >= spp)
            qm = np.where(south, _gauss(p["IGW_SPP"] * (thm * ipi - 1.0)), 0.0)
            nm = south.astype(float)
            cond = inner & (thm < spp) & (thk < spp)
            if typ == "see_saw_rect":
                cond &= phi < 0.75 * pi
            val = np.cos(p["fac_AA"] * phi) ** p["exp_cos_AA"] * _gauss(em)
            qm = qm + np.where(cond, val, 0.0)
            nm = nm + cond
        elif typ == "cuboct_max":
            spp = p["min_SPP"]
            above = theta >= spp
            qk = np.where(above, p["w_SPP"] * _gauss(p["IGW_SPP"] * (theta * ipi - 1.0)), 0.0)
            nk = np.where(above, float(p["w_SPP"]), 0.0)
            base = inner & (thm < spp) & (p[4] < thk) & (thk < p[2])
            mid = base & (p[4] < thm) & (thm < p[2])
            low = base & ~mid & (thm < p[4])
            high = base & ~mid & ~low & (thm > p[2])
            c = np.cos(phi)
            t = 0.0556 * (np.cos(phi - 0.5 * pi) - 0.81649658)
            qm = (
                np.where(mid, c * c * _gauss(p[5] * (thm * ipi - 0.5)), 0.0)
                + np.where(low, _gauss(t) * _gauss(p[6] * (thm * ipi - 1 / 3)), 0.0)
                + np.where(high, _gauss(t) * _gauss(p[6] * (thm * ipi - 2 / 3.0)), 0.0)
            )
            nm = (mid | low | high).astype(float)
        elif typ == "bcc":
            spp = p["min_SPP"]
            above = jlt & (theta >= spp)
            qk = np.where(above, p["w_SPP"] * _gauss(p["IGW_SPP"] * (theta * ipi - 1.0)), 0.0)
            nk = np.where(above, float(p["w_SPP"]), 0.0)
            cond = inner & jlt[:, :, None] & (thk < spp)
            fac = np.where(thk > pi / 2.0, 1.0, -1.0)
            tmp = (thm - pi / 2.0) / math.asin(1 / 3)
            val = fac * np.cos(3 * phi) * (1 / math.exp(-0.5)) * tmp * np.exp(-0.5 * tmp * tmp)
            qm = np.where(cond, val, 0.0)
        else:  # pragma: no cover - guarded by _VECTORISED
            raise ValueError(f"order parameter {typ!r} is not vectorised")

        q = np.where(pair, qk + qm.sum(axis=2), 0.0)
        norm = np.where(pair, nk + nm.sum(axis=2), 0.0)
        if typ == "bent":
            total = float(norm.sum())
            out.append(float(q.sum()) / total if total > 1e-12 else None)
        elif typ == "bcc":
            if n > 3:
                out.append(float(q.sum()) / float(0.5 * float(n * (6 + (n - 2) * (n - 3)))))
            else:
                out.append(None)
        else:  # "max" types
            if n > 1:
                ratio = np.where(norm > 1e-12, q / np.where(norm > 1e-12, norm, 1.0), 0.0)
                out.append(float(ratio[pair].max()))
            else:
                out.append(None)
    return out


# ------------------------------------------------------------------------------------------------
# CrystalNN neighbour analysis with a vectorised Voronoi-facet extraction
# ------------------------------------------------------------------------------------------------
def _fast_voronoi_cls():
    """A pymatgen VoronoiNN whose ``get_voronoi_polyhedra`` computes the facet solid angles and volumes
    of the centre site with NumPy (same tessellation input, same formulas) instead of a Python loop over
    every ridge of the tessellation. Facets are returned in the same order as pymatgen's."""
    from pymatgen.analysis.local_env import VoronoiNN
    from pymatgen.core import PeriodicNeighbor
    from scipy.spatial import Voronoi

    class FastVoronoiNN(VoronoiNN):
        def _extract_nn_info(self, structure, nns):
            if self.targets is not None or not structure.is_ordered:
                return super()._extract_nn_info(structure, nns)
            # every site of an ordered structure is a target; PeriodicNeighbor carries image and index
            siw = []
            max_weight = max(nn[self.weight] for nn in nns.values())
            for nstats in nns.values():
                site = nstats["site"]
                if nstats[self.weight] > self.tol * max_weight:
                    nn_info = {
                        "site": site,
                        "image": site.image,
                        "weight": nstats[self.weight] / max_weight,
                        "site_index": site.index,
                    }
                    if self.extra_nn_info:
                        poly_info = nstats
                        del poly_info["site"]
                        nn_info["poly_info"] = poly_info
                    siw.append(nn_info)
            return siw

        def get_voronoi_polyhedra(self, structure, n):
            if self.targets is None and structure.is_ordered:
                targets = None  # all sites are targets: no filtering needed
            else:
                targets = structure.elements if self.targets is None else self.targets
            center = structure[n]
            corners = [[1, 1, 1], [-1, 1, 1], [1, -1, 1], [1, 1, -1]]
            d_corners = [np.linalg.norm(structure.lattice.get_cartesian_coords(c)) for c in corners]
            max_cutoff = max(d_corners) + 0.01
            lattice = structure.lattice
            while True:
                try:
                    # structure.get_sites_in_sphere, sorted by distance (stable), as arrays: a
                    # PeriodicNeighbor is only built for the few points that share a facet with the centre
                    fc, dist, idx, img = lattice.get_points_in_sphere(
                        structure.frac_coords, center.coords, self.cutoff, zip_results=False
                    )
                    order = np.argsort(np.asarray(dist), kind="stable")
                    fc, dist = np.asarray(fc)[order], np.asarray(dist)[order]
                    idx, img = np.asarray(idx)[order], np.asarray(img)[order]
                    cart = lattice.get_cartesian_coords(fc)
                    voro = Voronoi(cart)

                    def make_site(k: int, fc=fc, dist=dist, idx=idx, img=img):
                        i = int(idx[k])
                        return PeriodicNeighbor(
                            structure[i].species, fc[k], lattice, properties=structure[i].properties,
                            nn_distance=float(dist[k]), image=tuple(img[k]), index=i, label=structure[i].label,
                        )  # fmt: skip

                    return _facets_of_first_point(cart, make_site, targets, voro)
                except RuntimeError as exc:
                    if self.cutoff >= max_cutoff:
                        if exc.args and "vertex" in exc.args[0]:
                            raise
                        raise RuntimeError("Error in Voronoi neighbor finding; max cutoff exceeded") from None
                    self.cutoff = min(self.cutoff * 2, max_cutoff + 0.001)

    return FastVoronoiNN


def _facets_of_first_point(cart: np.ndarray, make_site, targets, voro) -> dict:
    """pymatgen's ``VoronoiNN._extract_cell_info(0, ...)`` (solid angle, volume, area of every facet of
    point 0 of the tessellated points ``cart``), vectorised over the facets' triangles; ``make_site(k)``
    builds the site object of point k."""
    rp = voro.ridge_points
    ridges = np.nonzero((rp[:, 0] == 0) | (rp[:, 1] == 0))[0]
    verts = voro.vertices
    center = cart[0]
    tri_face, tri_a, tri_b, tri_c = [], [], [], []
    faces = []
    for f, r in enumerate(ridges.tolist()):
        vind = voro.ridge_vertices[r]
        if -1 in vind:
            raise RuntimeError("This structure is pathological, infinite vertex in the Voronoi construction")
        other = int(rp[r, 0] if rp[r, 1] == 0 else rp[r, 1])
        faces.append((other, len(vind)))
        m = len(vind) - 2  # fan triangles (vind[0], vind[i], vind[i + 1])
        if m > 0:
            tri_face.extend([f] * m)
            tri_a.extend([vind[0]] * m)
            tri_b.extend(vind[1:-1])
            tri_c.extend(vind[2:])
    if not faces:
        raise ValueError("No Voronoi neighbors found for site - try increasing cutoff")
    tri_face = np.asarray(tri_face, dtype=np.int64)
    a = verts[np.asarray(tri_a, dtype=np.int64)]
    b = verts[np.asarray(tri_b, dtype=np.int64)]
    c = verts[np.asarray(tri_c, dtype=np.int64)]
    # solid angle of each triangle (pymatgen.analysis.local_env.solid_angle, one fan triangle at a time)
    d0, d1, d2 = a - center, b - center, c - center
    n0, n1, n2 = (np.linalg.norm(d, axis=1) for d in (d0, d1, d2))
    tp = np.abs(np.einsum("ij,ij->i", d0, np.cross(d1, d2)))
    de = (
        n0 * n1 * n2
        + n2 * np.einsum("ij,ij->i", d0, d1)
        + n1 * np.einsum("ij,ij->i", d0, d2)
        + n0 * np.einsum("ij,ij->i", d1, d2)
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        ang = np.where(
            de == 0,
            np.where(tp > 0, 0.5 * math.pi, -0.5 * math.pi),
            np.arctan(tp / np.where(de == 0, 1.0, de)),
        )
    ang = np.where(ang > 0, ang, ang + math.pi) * 2
    # volume of the tetrahedron (centre, a, b, c) (pymatgen vol_tetra(center, a, b, c))
    vol = np.abs(np.einsum("ij,ij->i", center - c, np.cross(a - c, b - c))) / 6
    nf = len(faces)
    solid = np.bincount(tri_face, weights=ang, minlength=nf)
    volume = np.bincount(tri_face, weights=vol, minlength=nf)
    results = {}
    for f, (other, nverts) in enumerate(faces):
        site = make_site(other)
        face_dist = np.linalg.norm(center - cart[other]) / 2
        normal = np.subtract(cart[other], center)
        normal /= np.linalg.norm(normal)
        results[other] = {
            "site": site,
            "normal": normal,
            "solid_angle": float(solid[f]),
            "volume": float(volume[f]),
            "face_dist": face_dist,
            "area": 3 * float(volume[f]) / face_dist,
            "n_verts": nverts,
        }
    if targets is None:
        return results
    out = {}
    for idx, stats in results.items():
        nn = stats["site"]
        if nn.is_ordered:
            if nn.specie in targets:
                out[idx] = stats
        else:
            for sp in nn.species:
                if sp in targets:
                    out[idx] = stats
    return out


def _site_table(structure: Structure) -> tuple[list[float], list[float], list[float]]:
    """Per site of ``structure``: Pauling electronegativity X, CrystalNN's ``_get_radius`` and
    ``_get_default_radius`` (looked up once per crystal instead of once per neighbour)."""
    try:
        from pymatgen.core.local_env import _get_default_radius, _get_radius
    except ImportError:  # older pymatgen
        from pymatgen.analysis.local_env import _get_default_radius, _get_radius

    xs, radii, default = [], [], []
    for site in structure:
        xs.append(site.specie.X)
        radii.append(_get_radius(site))
        default.append(_get_default_radius(site))
    return xs, radii, default


def _crystalnn_nn_data(cnn, fast_voronoi_cls, structure: Structure, n: int, table=None):
    """pymatgen's ``CrystalNN.get_nn_data`` (cation_anion=False), with :func:`_fast_voronoi_cls`;
    ``table`` = :func:`_site_table` of the structure (computed when not given)."""
    if cnn.cation_anion:  # pragma: no cover - the "ops" preset never sets it
        return cnn.get_nn_data(structure, n)
    length = cnn.fingerprint_length
    vnn = fast_voronoi_cls(
        weight="solid_angle", targets=None, cutoff=cnn.search_cutoff, compute_adj_neighbors=False
    )
    nn = vnn.get_nn_info(structure, n)
    xs, radii, default = table if table is not None else _site_table(structure)
    if cnn.porous_adjustment:
        for x in nn:
            x["weight"] *= x["poly_info"]["solid_angle"] / x["poly_info"]["area"]
    if cnn.x_diff_weight > 0:
        for entry in nn:
            x1 = xs[n]
            x2 = xs[entry["site_index"]]
            if math.isnan(x1) or math.isnan(x2):
                chemical_weight = 1
            else:
                chemical_weight = 1 + cnn.x_diff_weight * math.sqrt(abs(x1 - x2) / 3.3)
            entry["weight"] *= chemical_weight
    nn = sorted(nn, key=lambda x: x["weight"], reverse=True)
    if nn[0]["weight"] == 0:
        return cnn.transform_to_length(cnn.NNData([], {0: 1.0}, {0: []}), length)
    highest_weight = nn[0]["weight"]
    for entry in nn:
        entry["weight"] /= highest_weight
    if cnn.distance_cutoffs:
        r1 = radii[n]
        for entry in nn:
            j = entry["site_index"]
            r2 = radii[j]
            if r1 > 0 and r2 > 0:
                diameter = r1 + r2
            else:
                diameter = default[n] + default[j]
            dist = np.linalg.norm(structure[n].coords - entry["site"].coords)
            dist_weight = 0.0
            cutoff_low = diameter + cnn.distance_cutoffs[0]
            cutoff_high = diameter + cnn.distance_cutoffs[1]
            if dist <= cutoff_low:
                dist_weight = 1
            elif dist < cutoff_high:
                dist_weight = (math.cos((dist - cutoff_low) / (cutoff_high - cutoff_low) * math.pi) + 1) * 0.5
            entry["weight"] *= dist_weight
    nn = sorted(nn, key=lambda x: x["weight"], reverse=True)
    if nn[0]["weight"] == 0:
        return cnn.transform_to_length(cnn.NNData([], {0: 1.0}, {0: []}), length)
    for entry in nn:
        entry["weight"] = round(entry["weight"], 3)
        del entry["poly_info"]
    nn = [x for x in nn if x["weight"] > 0]
    dist_bins: list[float] = []
    for entry in nn:
        if not dist_bins or dist_bins[-1] != entry["weight"]:
            dist_bins.append(entry["weight"])
    dist_bins.append(0)
    cn_weights = {}
    cn_nninfo = {}
    for idx, val in enumerate(dist_bins):
        if val != 0:
            nn_info = [entry for entry in nn if entry["weight"] >= val]
            cn = len(nn_info)
            cn_nninfo[cn] = nn_info
            cn_weights[cn] = cnn._semicircle_integral(dist_bins, idx)
    cn0_weight = 1 - sum(cn_weights.values())
    if cn0_weight > 0:
        cn_nninfo[0] = []
        cn_weights[0] = cn0_weight
    return cnn.transform_to_length(cnn.NNData(nn, cn_weights, cn_nninfo), length)
