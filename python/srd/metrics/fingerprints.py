"""Structure and composition fingerprints of the community protocol (CDVAE ``compute_metrics.py``).

* structure fingerprint: matminer ``CrystalNNFingerprint.from_preset("ops")`` of every site (61
  values), averaged over the sites;
* composition fingerprint: matminer ``ElementProperty.from_preset("magpie")`` (132 values) of the
  composition, standardised later with CDVAE's scaler (:mod:`srd.metrics.comp_scaler`).

Speed. matminer spends about two thirds of the CrystalNN fingerprint in pymatgen's
``LocalStructOrderParams.get_order_parameters``: a pure-Python triple loop over neighbour triplets,
re-run from scratch for each of the ~25 order parameters. :class:`StructureFingerprinter` keeps
pymatgen's CrystalNN neighbour analysis (``CrystalNN.get_nn_data``) unchanged and computes the
geometric order parameters of the "ops" preset with the same formulas, vectorised with NumPy over the
triplets and sharing the angles between order parameters. The results equal matminer's to floating-point
rounding (the tests compare them on real crystals; ``exact=True`` runs matminer itself).

One deliberate guard (absent in CDVAE): a crystal whose atom density would put more than
``max_sphere_sites`` atoms inside CrystalNN's 7 A search sphere (about 14 atoms per A^3, denser than any
crystal whose atoms are 0.5 A apart can be) is not fingerprinted, because the Voronoi analysis would take
minutes and gigabytes; it is reported as a fingerprint failure.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np
from pymatgen.core import Composition, Structure

__all__ = [
    "FingerprintError",
    "StructureFingerprinter",
    "composition_fingerprint",
    "fingerprint_settings",
    "STRUCT_FP_DIM",
    "COMP_FP_DIM",
]

STRUCT_FP_DIM = 61
COMP_FP_DIM = 132
#: Bump when what a fingerprint means changes (part of every cache key).
FINGERPRINT_VERSION = 1

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


class FingerprintError(RuntimeError):
    """A crystal could not be fingerprinted; the message says why."""


def fingerprint_settings(exact: bool = False, max_sphere_sites: int = 20000) -> dict:
    """What determines a fingerprint (stored with results and part of the reference cache key)."""
    from importlib.metadata import version

    return {
        "structure": "matminer CrystalNNFingerprint.from_preset('ops'), mean over sites",
        "composition": "matminer ElementProperty.from_preset('magpie')",
        "implementation": "matminer" if exact else "srd vectorised order parameters + pymatgen CrystalNN",
        "max_sphere_sites": int(max_sphere_sites),
        "matminer": version("matminer"),
        "pymatgen": version("pymatgen"),
        "version": FINGERPRINT_VERSION,
    }


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


class StructureFingerprinter:
    """Mean CrystalNN "ops" site fingerprint of a crystal (CDVAE's structure fingerprint).

    Args:
        exact: run matminer's ``CrystalNNFingerprint.featurize`` for every site (slow reference path).
        max_sphere_sites: refuse crystals so dense that CrystalNN's search sphere would hold more atoms.
    """

    def __init__(self, *, exact: bool = False, max_sphere_sites: int = 20000):
        from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

        self.exact = exact
        self.max_sphere_sites = max_sphere_sites
        self.featurizer = CrystalNNFingerprint.from_preset("ops")
        self.cnn = self.featurizer.cnn
        self._voronoi_cls = _fast_voronoi_cls()
        self._table = None  # (structure, _site_table(structure)) of the crystal being fingerprinted
        # (cn, [("wt", None) | ("op", LocalStructOrderParams) | ("vec", (type, params))]) in matminer's order
        self.plan: list[tuple[int, list]] = []
        # Steinhardt q_l of one neighbour set are computed together by one LocalStructOrderParams object
        # (that code path has no state shared between types, unlike the Peters-style one).
        self.boops: dict[int, object] = {}
        max_cn = sorted(self.featurizer.op_types)[-1]
        for cn in range(1, max_cn + 1):
            entries = []
            boop_types = []
            for op in self.featurizer.ops.get(cn, []):
                if op == "wt":
                    entries.append(("wt", None))
                elif len(op._types) == 1 and op._types[0] in _VECTORISED and op._params[0] is not None:
                    entries.append(("vec", (op._types[0], op._params[0])))
                elif len(op._types) == 1 and op._types[0] in _BOOPS and op._params[0] is None:
                    entries.append(("boop", len(boop_types)))
                    boop_types.append(op._types[0])
                else:
                    entries.append(("op", op))
            if boop_types:
                self.boops[cn] = _single_op_list(boop_types)
            self.plan.append((cn, entries))

    def site(self, structure: Structure, idx: int) -> list[float]:
        """The 61-value fingerprint of site ``idx`` (matminer's ``featurize(structure, idx)``)."""
        if self.exact:
            return self.featurizer.featurize(structure, idx)
        if self._table is None or self._table[0] is not structure:
            self._table = (structure, _site_table(structure))
        nndata = _crystalnn_nn_data(self.cnn, self._voronoi_cls, structure, idx, self._table[1])
        centre = structure[idx]
        fp: list[float] = []
        for cn, entries in self.plan:
            wt = nndata.cn_weights.get(cn, 0)
            if wt == 0:
                fp.extend([wt] * len(entries))
                continue
            neigh = [d["site"] for d in nndata.cn_nninfo[cn]]
            vec_specs = [e[1] for e in entries if e[0] == "vec"]
            vec_vals: list[float | None] = []
            if vec_specs:
                rij = np.array([s.coords for s in neigh], dtype=float).reshape(-1, 3) - centre.coords
                dist = np.linalg.norm(rij, axis=1)
                if len(neigh) and np.all(dist > 1e-8):
                    vec_vals = _geometric_ops(rij / dist[:, None], vec_specs)
                else:  # degenerate neighbour geometry: let pymatgen handle (or raise on) it
                    vec_vals = [
                        _single_op(t, p).get_order_parameters(
                            [centre, *neigh], 0, indices_neighs=list(range(1, len(neigh) + 1))
                        )[0]
                        for t, p in vec_specs
                    ]
            boop_vals = (
                self.boops[cn].get_order_parameters(
                    [centre, *neigh], 0, indices_neighs=list(range(1, len(neigh) + 1))
                )
                if cn in self.boops
                else []
            )
            it = iter(vec_vals)
            for kind, obj in entries:
                if kind == "wt":
                    fp.append(wt)
                    continue
                if kind == "vec":
                    val = next(it)
                elif kind == "boop":
                    val = boop_vals[obj]
                else:
                    val = obj.get_order_parameters(
                        [centre, *neigh], 0, indices_neighs=list(range(1, len(neigh) + 1))
                    )[0]
                val = val or 0  # None (too few neighbours) -> 0, as matminer
                fp.append(wt * val)
        return fp

    def check(self, structure: Structure) -> None:
        """Raise FingerprintError when the crystal is too dense to fingerprint in bounded time."""
        vol = float(structure.volume)
        if not math.isfinite(vol) or vol <= 0:
            raise FingerprintError(f"cell volume {vol:.3g} A^3 is not positive")
        cutoff = float(self.cnn.search_cutoff)
        expected = len(structure) / vol * (4.0 / 3.0) * math.pi * cutoff**3
        if expected > self.max_sphere_sites:
            raise FingerprintError(
                f"{len(structure)} atoms in {vol:.3g} A^3: about {expected:.0f} atoms within CrystalNN's {cutoff:g} A "
                f"search sphere (limit {self.max_sphere_sites}); far denser than any real crystal"
            )

    def __call__(self, structure: Structure) -> np.ndarray:
        """Mean over sites of the site fingerprints: [61] float64. Raises FingerprintError."""
        self.check(structure)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pymatgen: "No oxidation states specified", default radii
                self._table = (structure, _site_table(structure))
                sites = [self.site(structure, i) for i in range(len(structure))]
        except Exception as err:  # noqa: BLE001 - CDVAE counts any failure as "no fingerprint"
            msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            raise FingerprintError(f"CrystalNN fingerprint failed ({type(err).__name__}: {msg})") from None
        return np.asarray(sites, dtype=float).mean(axis=0)


def _single_op_list(types: list[str]):
    from pymatgen.analysis.local_env import LocalStructOrderParams

    return LocalStructOrderParams(list(types), parameters=[None] * len(types))


def _single_op(typ: str, params: dict):
    from pymatgen.analysis.local_env import LocalStructOrderParams

    return LocalStructOrderParams([typ], parameters=[params])


_COMP_FEATURIZER = None


def composition_fingerprint(atomic_numbers) -> np.ndarray:
    """Magpie fingerprint [132] of a composition given as atomic numbers (NaN where Magpie lacks data).

    Built like CDVAE: ``ElementProperty.from_preset("magpie").featurize(Composition(Counter(types)))``.
    """
    global _COMP_FEATURIZER
    if _COMP_FEATURIZER is None:
        from matminer.featurizers.composition.composite import ElementProperty

        _COMP_FEATURIZER = ElementProperty.from_preset("magpie")
    counter = Counter(int(z) for z in atomic_numbers)
    if not counter:
        raise FingerprintError("empty composition")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(_COMP_FEATURIZER.featurize(Composition(counter)), dtype=float)
