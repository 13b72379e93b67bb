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

from .pymatgen_port import (
    _BOOPS,
    _VECTORISED,
    MIRRORS_PYMATGEN,
    _crystalnn_nn_data,
    _fast_voronoi_cls,
    _geometric_ops,
    _site_table,
)

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
        "pymatgen_port_mirrors": None if exact else MIRRORS_PYMATGEN,
        "version": FINGERPRINT_VERSION,
    }


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
