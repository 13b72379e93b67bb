"""The crystal representation R (SPEC section 2): encoding, scaling, decoding, feature files.

R (704 values for the default grid), in this order:

    EAD block   [max over atoms (300) | min over atoms (300)] of the per-atom EAD features, / 1e6
    d_min       minimum interatomic distance over all periodic pairs (Angstrom)             1
    lattice     a, b, c (Angstrom), alpha, beta, gamma (radians)                            6
    composition atom fractions for Z = 1..96                                                96
    size        n / n_max                                                                   1

The 607 continuous values (EAD, d_min, lattice) are min-max scaled to [0, 1] with statistics of the
training split (:class:`ScalingStats`); composition and size are left as they are.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Structure

from .ops import ead_batch, min_distance
from .params import EADParams
from .structures import (
    MAX_SITES,
    Batch,
    Record,
    canonicalize,
    cell_problem,
    close_pair_problem,
    read_structures,
)
from .utils import atomic_torch_save, cache_root, progress, run_metadata, safe_torch_load, sha256_file

__all__ = [
    "EAD_SCALE",
    "N_ELEMENTS",
    "DATASET_N_MAX",
    "Layout",
    "ScalingStats",
    "Decoded",
    "Rejected",
    "Features",
    "encode_structures",
    "decode",
    "largest_remainder",
    "nearest_counts",
    "COMPOSITION_DECODINGS",
    "decoded_from_structures",
    "featurize",
    "prepare_structure",
    "pooled_ead",
]

#: The EAD block of R is divided by this (SPEC section 2).
EAD_SCALE = 1e6
#: Composition block covers Z = 1..96 (H..Cm).
N_ELEMENTS = 96
#: Largest number of atoms per crystal of each benchmark (the size entry of R is n / n_max).
DATASET_N_MAX = {"perov_5": 5, "carbon_24": 24, "mp_20": 20}
#: Bump when the meaning of a feature file changes (part of the cache key).
FEATURE_VERSION = 2


# ------------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where each block of R lives, for a descriptor with ``n_features`` per-atom features."""

    n_features: int = 300

    @property
    def ead(self) -> slice:
        return slice(0, 2 * self.n_features)

    @property
    def ead_max(self) -> slice:
        return slice(0, self.n_features)

    @property
    def ead_min(self) -> slice:
        return slice(self.n_features, 2 * self.n_features)

    @property
    def dmin(self) -> int:
        return 2 * self.n_features

    @property
    def lattice(self) -> slice:
        return slice(2 * self.n_features + 1, 2 * self.n_features + 7)

    @property
    def continuous(self) -> slice:
        """EAD, d_min and lattice: the min-max scaled part."""
        return slice(0, 2 * self.n_features + 7)

    @property
    def target(self) -> slice:
        """EAD and d_min: what reconstruction matches."""
        return slice(0, 2 * self.n_features + 1)

    @property
    def composition(self) -> slice:
        s = 2 * self.n_features + 7
        return slice(s, s + N_ELEMENTS)

    @property
    def size(self) -> int:
        return 2 * self.n_features + 7 + N_ELEMENTS

    @property
    def dim(self) -> int:
        return 2 * self.n_features + 8 + N_ELEMENTS

    def blocks(self) -> dict[str, tuple[int, int]]:
        """Named [start, stop) ranges of every block (saved in feature files and checkpoints)."""
        return {
            "ead_max": (self.ead_max.start, self.ead_max.stop),
            "ead_min": (self.ead_min.start, self.ead_min.stop),
            "dmin": (self.dmin, self.dmin + 1),
            "lattice": (self.lattice.start, self.lattice.stop),
            "composition": (self.composition.start, self.composition.stop),
            "size": (self.size, self.size + 1),
        }


# ------------------------------------------------------------------------------------------------
# Scaling
# ------------------------------------------------------------------------------------------------
@dataclass
class ScalingStats:
    """Min-max statistics of the continuous block, fitted on a training split.

    scale(x) = (x - lo) / span with span = hi - lo, or 1 where a column is (nearly) constant: the cubic angles
    of Perov-5, and EAD columns whose values over the whole split are below 1e-8 (in units of EAD / 1e6;
    e.g. eta = 90 at mu = 0, ~1e-36), which a min-max scaling would blow up into noise of order 100 on
    other splits. Either way the scaling stays exactly invertible.
    """

    #: columns whose spread is below this are treated as constant
    MIN_SPAN = 1e-8

    lo: torch.Tensor  # [n_cont] float64
    hi: torch.Tensor  # [n_cont] float64
    layout: Layout = field(default_factory=Layout)

    @property
    def span(self) -> torch.Tensor:
        span = self.hi - self.lo
        return torch.where(
            span > torch.clamp(1e-12 * self.hi.abs(), min=self.MIN_SPAN), span, torch.ones_like(span)
        )

    @classmethod
    def fit(cls, raw: torch.Tensor, layout: Layout) -> ScalingStats:
        if raw.dim() != 2 or raw.shape[1] != layout.dim or raw.shape[0] == 0:
            raise ValueError(
                f"ScalingStats.fit: expected raw R of shape [M > 0, {layout.dim}], got {list(raw.shape)}"
            )
        cont = raw[:, layout.continuous].double()
        return cls(cont.min(dim=0).values, cont.max(dim=0).values, layout)

    def scale(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw R -> scaled R (float64)."""
        out = raw.double().clone()
        sl = self.layout.continuous
        out[:, sl] = (out[:, sl] - self.lo.to(out.device)) / self.span.to(out.device)
        return out

    def unscale(self, scaled: torch.Tensor) -> torch.Tensor:
        """Scaled R -> raw R (float64); the exact inverse of :meth:`scale`."""
        out = scaled.double().clone()
        sl = self.layout.continuous
        out[:, sl] = out[:, sl] * self.span.to(out.device) + self.lo.to(out.device)
        return out

    def to_dict(self) -> dict:
        return {"lo": self.lo.clone(), "hi": self.hi.clone(), "n_features": self.layout.n_features}

    @classmethod
    def from_dict(cls, d: dict) -> ScalingStats:
        try:
            lo, hi = (
                torch.as_tensor(d["lo"], dtype=torch.float64),
                torch.as_tensor(d["hi"], dtype=torch.float64),
            )
            layout = Layout(int(d["n_features"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed scaling statistics (need lo, hi, n_features): {err}") from None
        n = layout.continuous.stop
        if lo.shape != (n,) or hi.shape != (n,):
            raise ValueError(
                f"malformed scaling statistics: lo/hi must have {n} values, got {list(lo.shape)}, {list(hi.shape)}"
            )
        return cls(lo, hi, layout)


# ------------------------------------------------------------------------------------------------
# Encoding
# ------------------------------------------------------------------------------------------------
def prepare_structure(
    structure: Structure, *, n_max: int, niggli: bool = True, where: str = "crystal"
) -> Structure:
    """Check that a crystal can be represented and apply CDVAE's canonicalisation (Niggli reduction).

    Raises ValueError with the reason when the crystal is out of range (too many atoms, Z > 96) or
    unphysical (a volume per atom, cell height or interatomic distance below the floors of
    :mod:`srd.structures`: ``MIN_VOLUME_PER_ATOM``, ``MIN_CELL_HEIGHT``, ``MIN_PAIR_DISTANCE``).
    """
    if len(structure) == 0:
        raise ValueError(f"{where}: the structure has no atoms")
    if len(structure) > n_max:
        raise ValueError(f"{where}: {len(structure)} atoms exceed n_max = {n_max}")
    zmax = max(structure.atomic_numbers)
    if zmax > N_ELEMENTS:
        el = [sp for sp in structure.species if sp.Z == zmax][0]
        raise ValueError(
            f"{where}: element {el} (Z = {zmax}) is beyond Z = {N_ELEMENTS}, the composition block of R"
        )
    # Volume first (Niggli reduction of a degenerate cell is itself unreliable), heights of the cell used.
    problem = cell_problem(structure.lattice.matrix, len(structure))
    if problem is None:
        structure = canonicalize(structure, niggli=niggli) if niggli else structure
        problem = cell_problem(structure.lattice.matrix, len(structure)) or close_pair_problem(structure)
    if problem:
        raise ValueError(f"{where}: {problem}")
    return structure


def pooled_ead(features: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
    """[max over atoms | min over atoms] of per-atom features, per crystal: [B, 2 F] (differentiable)."""
    counts = (ptr[1:] - ptr[:-1]).tolist()
    if len(set(counts)) == 1:  # equal sizes (e.g. all restarts of one crystal): one reshape, no loop
        f = features.reshape(len(counts), counts[0], -1)
        return torch.cat([f.max(dim=1).values, f.min(dim=1).values], dim=1)
    lengths = ptr[1:] - ptr[:-1]
    return torch.cat(
        [
            torch.segment_reduce(features, "max", lengths=lengths, axis=0),
            torch.segment_reduce(features, "min", lengths=lengths, axis=0),
        ],
        dim=1,
    )


def encode_structures(
    structures: Sequence[Structure],
    *,
    n_max: int,
    params: EADParams | None = None,
    batch_size: int = 256,
    dtype: torch.dtype = torch.float64,
    show_progress: bool = False,
    with_ead: bool = True,
) -> torch.Tensor:
    """Raw (unscaled) R of already-prepared structures: [M, layout.dim] float64.

    The structures are used as given (call :func:`prepare_structure` first for CDVAE's Niggli
    canonicalisation). ``with_ead=False`` leaves the EAD block and d_min at zero (for checks of the
    other blocks that need no descriptor).
    """
    params = params or EADParams()
    layout = Layout(params.n_features)
    out = torch.zeros((len(structures), layout.dim), dtype=torch.float64)
    bar = progress(total=len(structures), desc="featurize", unit="crystal", disable=not show_progress)
    for start in range(0, len(structures), batch_size):
        chunk = structures[start : start + batch_size]
        rows = out[start : start + len(chunk)]
        if with_ead:
            b = Batch.from_structures(chunk, dtype=dtype)
            with torch.no_grad():
                feats = ead_batch(b.positions, b.numbers, b.cells, b.ptr, params=params)
                rows[:, layout.ead] = pooled_ead(feats, b.ptr).double() / EAD_SCALE
                rows[:, layout.dmin] = min_distance(b.positions, b.cells, b.ptr).double()
        for k, s in enumerate(chunk):
            lat = s.lattice
            rows[k, layout.lattice] = torch.tensor(
                [*lat.abc, *(math.radians(a) for a in lat.angles)], dtype=torch.float64
            )
            comp = rows[k, layout.composition]
            for z in s.atomic_numbers:
                comp[z - 1] += 1.0
            comp /= len(s)
            rows[k, layout.size] = len(s) / n_max
        bar.update(len(chunk))
    bar.close()
    return out


# ------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------
@dataclass
class Decoded:
    """What R fixes directly: atom count, composition, lattice; plus the target of reconstruction."""

    n_atoms: int
    numbers: list[int]  # atomic numbers, sorted ascending, len == n_atoms
    lengths: tuple[float, float, float]  # Angstrom
    angles: tuple[float, float, float]  # degrees
    target: torch.Tensor  # raw [EAD / 1e6 (2F), d_min] float64

    @property
    def formula(self) -> str:
        from pymatgen.core import Composition, Element

        return Composition(
            {Element.from_Z(z): self.numbers.count(z) for z in set(self.numbers)}
        ).reduced_formula

    def lattice_matrix(self) -> np.ndarray:
        from pymatgen.core import Lattice

        return Lattice.from_parameters(*self.lengths, *self.angles).matrix


@dataclass
class Rejected:
    """A vector that does not decode to a crystal, and why."""

    reason: str


def decoded_from_structures(
    structures: Sequence[Structure],
    *,
    n_max: int,
    params: EADParams | None = None,
    show_progress: bool = False,
) -> list[Decoded]:
    """Ground-truth reconstruction targets: what :func:`decode` would give for these (prepared) crystals,
    taken exactly from the structures (the Table 1 protocol reconstructs from the true R)."""
    params = params or EADParams()
    layout = Layout(params.n_features)
    raw = encode_structures(structures, n_max=n_max, params=params, show_progress=show_progress)
    return [
        Decoded(
            len(s),
            sorted(s.atomic_numbers),
            tuple(float(x) for x in s.lattice.abc),
            tuple(float(x) for x in s.lattice.angles),
            raw[k, layout.target].clone(),
        )
        for k, s in enumerate(structures)
    ]


def largest_remainder(fractions: np.ndarray, n: int) -> np.ndarray:
    """Integer counts summing to n, proportional to ``fractions`` (>= 0, sum > 0), by largest remainder.

    Ties go to the lower index (lower Z), so the result is deterministic.
    """
    f = np.asarray(fractions, dtype=np.float64)
    quota = f / f.sum() * n
    counts = np.floor(quota + 1e-9).astype(np.int64)
    left = n - int(counts.sum())
    if left > 0:
        rem = quota - counts
        order = np.lexsort((np.arange(len(f)), -rem))  # largest remainder first, then lower index
        counts[order[:left]] += 1
    return counts


def nearest_counts(fractions: np.ndarray, n: int) -> np.ndarray:
    """Integer counts c >= 0 summing to n that minimise sum_z (c_z - n * f_z)^2, *without* renormalising f.

    This is the composition block of the nearest decodable R. It equals largest-remainder rounding when
    the fractions sum to 1, but differs for generated vectors whose fractions carry a spread of small
    positive noise over many elements (clipping x0 to the data range makes that noise one-sided):
    renormalising shrinks the real fractions and lets the noise win seats, while the projection gives a
    seat to an element only where its own quota earns it. Greedy is exact for this separable convex
    problem (adding an atom to z costs 2 (c_z - q_z) + 1); ties go to the lower Z.
    """
    q = np.asarray(fractions, dtype=np.float64) * n
    counts = np.zeros(len(q), dtype=np.int64)
    for _ in range(n):
        counts[int(np.argmax(q - counts))] += 1
    return counts


COMPOSITION_DECODINGS = ("largest-remainder", "nearest")


def _lattice_problem(lengths: np.ndarray, angles_deg: np.ndarray) -> str | None:
    if not np.all(np.isfinite(lengths)) or not np.all(np.isfinite(angles_deg)):
        return "non-finite lattice parameters"
    if np.any(lengths <= 0):
        return f"non-positive lattice length {lengths.round(4).tolist()}"
    if np.any(angles_deg <= 0) or np.any(angles_deg >= 180):
        return f"lattice angle outside (0, 180) degrees: {angles_deg.round(3).tolist()}"
    a, b, c = np.radians(angles_deg)
    # Gram determinant > 0  <=>  the three vectors span a cell of positive volume.
    g = 1 - np.cos(a) ** 2 - np.cos(b) ** 2 - np.cos(c) ** 2 + 2 * np.cos(a) * np.cos(b) * np.cos(c)
    if g <= 1e-8:
        return f"angles {angles_deg.round(3).tolist()} do not form a cell of positive volume"
    return None


def decode(
    scaled: torch.Tensor, stats: ScalingStats, n_max: int, composition: str = "largest-remainder"
) -> list[Decoded | Rejected]:
    """Decode (generated) scaled R vectors into atom count, composition and lattice (SPEC section 2).

    n = clamp(round(size * n_max), 1, n_max); negative fractions -> 0, then counts summing to n, by
    ``composition``: "largest-remainder" (SPEC: renormalise, largest-remainder rounding) or "nearest"
    (:func:`nearest_counts`, the nearest composition without renormalising). A vector with no positive
    fraction or an impossible lattice is rejected.
    """
    if composition not in COMPOSITION_DECODINGS:
        raise ValueError(f"decode: composition must be one of {COMPOSITION_DECODINGS}, got {composition!r}")
    layout = stats.layout
    if scaled.dim() != 2 or scaled.shape[1] != layout.dim:
        raise ValueError(f"decode: expected R of shape [M, {layout.dim}], got {list(scaled.shape)}")
    raw = stats.unscale(scaled.detach().cpu())
    out: list[Decoded | Rejected] = []
    for row in raw:
        if not bool(torch.isfinite(row).all()):
            out.append(Rejected("non-finite values in R"))
            continue
        size = float(row[layout.size])
        n = int(min(max(round(size * n_max), 1), n_max))
        frac = np.clip(row[layout.composition].numpy(), 0.0, None)
        if frac.sum() <= 0:
            out.append(Rejected("no element: every composition fraction is <= 0"))
            continue
        counts = largest_remainder(frac, n) if composition == "largest-remainder" else nearest_counts(frac, n)
        numbers = [z + 1 for z in range(N_ELEMENTS) for _ in range(int(counts[z]))]
        lat = row[layout.lattice].numpy()
        lengths, angles = lat[:3], np.degrees(lat[3:])
        problem = _lattice_problem(lengths, angles)
        if problem is None:
            from pymatgen.core import Lattice

            problem = cell_problem(Lattice.from_parameters(*lengths, *angles).matrix, n)
        if problem:
            out.append(Rejected(problem))
            continue
        out.append(
            Decoded(
                n,
                numbers,
                tuple(float(x) for x in lengths),
                tuple(float(x) for x in angles),
                row[layout.target].clone(),
            )
        )
    return out


# ------------------------------------------------------------------------------------------------
# Feature files and the featurisation cache
# ------------------------------------------------------------------------------------------------
@dataclass
class Features:
    """A featurised dataset: scaled R, ids, statistics, and everything needed to interpret them."""

    R: torch.Tensor  # [M, dim] float32, scaled
    ids: list[str]
    stats: ScalingStats
    n_max: int
    params: EADParams
    dataset: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: dict = field(default_factory=dict)

    @property
    def layout(self) -> Layout:
        return self.stats.layout

    def raw(self) -> torch.Tensor:
        return self.stats.unscale(self.R)

    def to_dict(self) -> dict:
        return {
            "format": "srd-features",
            "feature_version": FEATURE_VERSION,
            "R": self.R,
            "ids": list(self.ids),
            "stats": self.stats.to_dict(),
            "n_max": int(self.n_max),
            "params": json.dumps(self.params.to_dict()),
            "dataset": self.dataset or "",
            "layout": {k: list(v) for k, v in self.layout.blocks().items()},
            "skipped": [[a, b] for a, b in self.skipped],
            "source": json.dumps(self.source),
            "meta": json.dumps(run_metadata()),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the feature file, with a checksum of its contents (checked by :meth:`load`)."""
        from .utils import with_checksum

        atomic_torch_save(with_checksum(self.to_dict()), path)

    def check_finite(self, where: str = "features") -> None:
        """Raise ValueError naming the rows (index and id) and blocks of R that hold NaN or inf.

        Also refuses non-finite scaling statistics. A model trained on such values learns NaN.
        """
        blocks = self.layout.blocks()

        def block_names(cols: torch.Tensor) -> str:
            names = [n for n, (a, b) in blocks.items() if bool(((cols >= a) & (cols < b)).any())]
            return ", ".join(names) if names else "?"

        def kinds(vals: torch.Tensor) -> str:
            out = []
            if bool(torch.isnan(vals).any()):
                out.append("NaN")
            if bool(torch.isinf(vals).any()):
                out.append("inf")
            return "/".join(out)

        R = self.R
        bad = ~torch.isfinite(R)
        if bool(bad.any()):
            rows = torch.nonzero(bad.any(dim=1)).flatten()
            first = []
            for r in rows[:5].tolist():
                cols = torch.nonzero(bad[r]).flatten()
                rid = self.ids[r] if r < len(self.ids) else "?"
                first.append(
                    f"row {r} (id {rid!r}): {kinds(R[r, cols])} in block {block_names(cols)} "
                    f"(column{'s' if len(cols) > 1 else ''} {', '.join(map(str, cols[:4].tolist()))}"
                    f"{', ...' if len(cols) > 4 else ''})"
                )
            more = f"; ... and {len(rows) - 5} more" if len(rows) > 5 else ""
            raise ValueError(
                f"{where}: R holds non-finite values (NaN or inf) in {len(rows)} of {R.shape[0]} rows: "
                f"{'; '.join(first)}{more}. Drop these crystals or featurise again"
            )
        for name in ("lo", "hi"):
            v = getattr(self.stats, name)
            bad = ~torch.isfinite(v)
            if bool(bad.any()):
                cols = torch.nonzero(bad).flatten()
                raise ValueError(
                    f"{where}: the scaling statistics ({name}) hold non-finite values in block "
                    f"{block_names(cols)} (column{'s' if len(cols) > 1 else ''} "
                    f"{', '.join(map(str, cols[:4].tolist()))}{', ...' if len(cols) > 4 else ''}); "
                    "they were fitted on non-finite features. Featurise again"
                )

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "features") -> Features:
        from .utils import verify_checksum

        if not isinstance(d, dict) or d.get("format") != "srd-features":
            raise ValueError(f"{where}: not an srd feature file (written by srd-featurize)")
        verify_checksum(d, where)
        try:
            params = EADParams.from_dict(json.loads(d["params"]))
            f = cls(
                R=torch.as_tensor(d["R"], dtype=torch.float32),
                ids=[str(x) for x in d["ids"]],
                stats=ScalingStats.from_dict(d["stats"]),
                n_max=int(d["n_max"]),
                params=params,
                dataset=d.get("dataset") or None,
                skipped=[(str(a), str(b)) for a, b in d.get("skipped", [])],
                source=json.loads(d.get("source", "{}")),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as err:
            raise ValueError(f"{where}: malformed srd feature file ({err})") from None
        if f.R.dim() != 2 or f.R.shape[1] != f.layout.dim or f.R.shape[0] != len(f.ids):
            raise ValueError(
                f"{where}: R has shape {list(f.R.shape)} but {len(f.ids)} ids and dim {f.layout.dim}"
            )
        f.check_finite(where)
        return f

    @classmethod
    def load(cls, path: str | os.PathLike) -> Features:
        return cls.from_dict(safe_torch_load(path, what="feature file"), where=str(path))


def dataset_from_path(path: str | os.PathLike) -> str | None:
    """Guess the benchmark (perov_5, carbon_24, mp_20) from a path like data/perov_5/test.csv.gz."""
    parts = [p.lower() for p in Path(path).parts]
    for name in DATASET_N_MAX:
        if any(p == name or p.startswith(name + "_") or p.startswith(name + ".") for p in parts):
            return name
    return None


def cache_dir() -> Path:
    """Where featurised inputs are cached: $SRD_CACHE_DIR/features, else ~/.cache/srd/features."""
    return cache_root("features")


def _cache_key(
    path: Path, *, n_max: int, params: EADParams, niggli: bool, stats: ScalingStats | None, limit
) -> str:
    h = hashlib.sha256()
    h.update(sha256_file(path).encode())
    h.update(json.dumps(params.to_dict(), default=str).encode())
    h.update(f"n_max={n_max};niggli={niggli};limit={limit};v={FEATURE_VERSION}".encode())
    if stats is not None:
        h.update(stats.lo.numpy().tobytes())
        h.update(stats.hi.numpy().tobytes())
    return h.hexdigest()[:32]


def _prepare_one(args):
    rec, n_max, niggli = args
    if rec.structure is None:
        return rec
    try:
        return Record(rec.id, prepare_structure(rec.structure, n_max=n_max, niggli=niggli, where=f"{rec.id}"))
    except ValueError as err:
        return Record(rec.id, None, str(err))
    except Exception as err:  # noqa: BLE001 - e.g. a Niggli reduction that fails on a degenerate cell
        return Record(rec.id, None, f"{rec.id}: cannot canonicalise ({type(err).__name__}: {err})")


def _read_and_prepare(
    path: Path, *, n_max: int, niggli: bool, limit: int | None, workers: int, show_progress: bool
):
    """Parse and canonicalise every crystal (in parallel worker processes when workers > 1)."""
    records = list(read_structures(path, limit=limit)) if workers <= 1 else None
    if records is not None:
        it = (_prepare_one((r, n_max, niggli)) for r in records)
        return list(progress(it, total=len(records), desc="parse", unit="crystal", disable=not show_progress))
    import multiprocessing as mp

    from .structures import read_raw_items

    items = read_raw_items(path, limit=limit)
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as pool:
        it = pool.imap(_parse_and_prepare_item, [(it_, n_max, niggli) for it_ in items], chunksize=32)
        return list(progress(it, total=len(items), desc="parse", unit="crystal", disable=not show_progress))


def _parse_and_prepare_item(args):
    from .structures import record_from_raw_item

    item, n_max, niggli = args
    return _prepare_one((record_from_raw_item(item), n_max, niggli))


def featurize(
    path: str | os.PathLike,
    *,
    n_max: int | None = None,
    dataset: str | None = None,
    stats: ScalingStats | None = None,
    params: EADParams | None = None,
    niggli: bool = True,
    limit: int | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    use_cache: bool = True,
    show_progress: bool = True,
) -> Features:
    """Featurise every crystal of ``path`` (see :func:`srd.structures.read_structures` for the kinds).

    Args:
        n_max: largest atom count (the size entry is n / n_max); default: from ``dataset``, else the
            input's largest crystal.
        dataset: perov_5, carbon_24 or mp_20 (sets n_max); guessed from the path when not given.
        stats: scaling statistics to apply (e.g. those of the training split); default: fitted here.
        limit: only the first ``limit`` crystals.
        workers: processes for CIF parsing (default: all cores).
        use_cache: reuse a cached result for the same input bytes, grid, n_max, stats and limit.

    Crystals that fail to parse, have an element beyond Z = 96 or more than n_max atoms are skipped and
    listed in ``Features.skipped`` as (id, reason).
    """
    path = Path(path)
    params = params or EADParams()
    dataset = dataset or dataset_from_path(path)
    inferred = False
    if n_max is None and dataset is not None:
        if dataset not in DATASET_N_MAX:
            raise ValueError(f"featurize: unknown dataset {dataset!r}; known: {sorted(DATASET_N_MAX)}")
        n_max = DATASET_N_MAX[dataset]
    elif n_max is None:
        # Neither given: the input's own largest crystal (fine for a training split; pass the training
        # split's n_max for other splits so that the size entries agree).
        inferred = True
    if n_max is not None and n_max < 1:
        raise ValueError(f"featurize: n_max must be >= 1, got {n_max}")
    key = _cache_key(
        path,
        n_max=n_max if not inferred else "inferred",
        params=params,
        niggli=niggli,
        stats=stats,
        limit=limit,
    )
    cached = cache_dir() / f"{key}.pt"
    if use_cache and cached.is_file():
        try:
            feats = Features.load(cached)
            feats.source["cache"] = str(cached)
            return feats
        except ValueError:
            pass  # a stale or damaged cache entry is recomputed
    workers = workers if workers is not None else (os.cpu_count() or 1)
    records = _read_and_prepare(
        path,
        n_max=MAX_SITES if inferred else n_max,
        niggli=niggli,
        limit=limit,
        workers=workers,
        show_progress=show_progress,
    )
    good = [r for r in records if r.structure is not None]
    if inferred and good:
        n_max = max(len(r.structure) for r in good)
    skipped = [(r.id, r.error or "unknown error") for r in records if r.structure is None]
    if not good:
        raise ValueError(
            f"featurize: no usable crystal in {path} ({len(skipped)} skipped; first: {skipped[:1]})"
        )
    raw = encode_structures(
        [r.structure for r in good],
        n_max=n_max,
        params=params,
        batch_size=batch_size,
        show_progress=show_progress,
    )
    layout = Layout(params.n_features)
    # A crystal whose representation is not finite is skipped (named), never passed on.
    finite = torch.isfinite(raw).all(dim=1)
    if not bool(finite.all()):
        for k in torch.nonzero(~finite).flatten().tolist():
            skipped.append((good[k].id, f"{good[k].id}: non-finite values in its representation R"))
        good = [r for r, ok in zip(good, finite.tolist()) if ok]
        raw = raw[finite]
        if not good:
            raise ValueError(f"featurize: no usable crystal in {path} (every representation is non-finite)")
    fitted = stats is None
    stats = stats if stats is not None else ScalingStats.fit(raw, layout)
    feats = Features(
        R=stats.scale(raw).float(),
        ids=[r.id for r in good],
        stats=stats,
        n_max=n_max,
        params=params,
        dataset=dataset,
        skipped=skipped,
        source={
            "path": str(path),
            "n_input": len(records),
            "n_ok": len(good),
            "n_skipped": len(skipped),
            "stats": "fitted on this input" if fitted else "given",
            "niggli": niggli,
            "limit": limit,
            "n_max": "the largest crystal of this input" if inferred else "given",
        },
    )
    if use_cache:
        try:
            feats.save(cached)
        except OSError:
            pass  # a read-only cache is not an error
    return feats
