"""Space-group symmetry for reconstruction: symmetric random starts, symmetry-preserving descent and the
final symmetrisation of a found structure.

Why (docs/reconstruction.md, "symmetric starts"): started within ~0.3 A of the truth, one descent finds
the global basin of MP-20-like cells, but uniform random starts almost never land that close in 7-20-atom
cells. Real crystals are symmetric: a random structure on the Wyckoff sites of a space group that fits the
decoded lattice has a handful of free parameters instead of 3N, so random starts sample that small space
(as AIRSS and PyXtal do). R is invariant, so the loss is invariant under the group's operations, and a
descent that is projected back onto the group's invariant positions after every step (and after every
hop) searches only that space.

Everything here works in the *decoded* cell's fractional basis (the cell reconstruction builds with
Lattice.from_parameters): a group is a list of operations x -> R x + t (R integer matrices, t fractional
translations) that map the decoded lattice onto itself.

  * :func:`lattice_groups`: the space groups (Hall settings of spglib's database) whose operations, mapped
    from the standard setting of the decoded lattice's Bravais type into the decoded basis, are lattice
    symmetries. Cached per lattice.
  * :func:`symmetric_start`: random positions of a given composition (atoms in the order of
    ``Decoded.numbers``) on the orbits of one group, no two atoms closer than ``min_dist``.
  * :func:`site_permutations` / :class:`SymmetryProjector`: which atom each operation sends each atom to,
    and the batched projection onto the invariant positions (the orbit average) used in the hot loop.
  * :func:`detect_symmetry`: the operations of a found structure (spglib), for the final symmetrisation.
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

#: Space-group frequencies of a general-materials training set (group number -> crystals), the prior of
#: which groups symmetric starts try first. Written by :func:`write_group_prior` from MP-20's val split
#: (the `spacegroup.number` column); test splits are never used.
GROUP_PRIOR_FILE = Path(__file__).resolve().parent / "spacegroup_prior.json"

_TOL = 1e-4  # fractional tolerance for "the same point" (positions built here are exact to ~1e-12)


@dataclass(frozen=True)
class Group:
    """A space group's operations in one cell's fractional basis (x -> rot @ x + trans, mod 1)."""

    number: int  # International Tables number
    hall: int  # spglib Hall number of the setting it came from
    symbol: str  # Hermann-Mauguin short symbol
    rot: np.ndarray  # [g, 3, 3] float64 (integer-valued)
    trans: np.ndarray  # [g, 3] float64 in [0, 1)

    @property
    def order(self) -> int:
        """Operations per decoded cell (centring translations of a conventional cell count)."""
        return len(self.rot)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """[g, n, 3] images of fractional points x [n, 3] (not wrapped)."""
        return np.einsum("gij,nj->gni", self.rot, x) + self.trans[:, None, :]


def _wrap(d: np.ndarray) -> np.ndarray:
    """Fractional differences into [-0.5, 0.5)."""
    return d - np.round(d)


def _op_key(rot: np.ndarray, trans: np.ndarray) -> tuple:
    """A hashable identity of one operation (integer rotation, translation mod 1 on a 1/48 grid)."""
    return (tuple(np.rint(rot).astype(int).ravel()), tuple(np.round(trans * 48).astype(int) % 48))


def _dedupe_ops(rot: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The distinct operations (rotations, translations in [0, 1)) and the group's identity: the sorted
    keys of its operations."""
    trans = np.mod(trans, 1.0)
    trans[np.abs(trans - 1.0) < 1e-6] = 0.0
    keys, keep = {}, []
    for k in range(len(rot)):
        key = _op_key(rot[k], trans[k])
        if key not in keys:
            keys[key] = k
            keep.append(k)
    return np.rint(rot[keep]), trans[keep], tuple(sorted(keys))


def _quiet_spglib(fn):
    """spglib 2.x warns on every call about its old error handling (None on failure), which we use."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return fn(*args, **kwargs)

    return wrapper


@functools.lru_cache(maxsize=4096)
@_quiet_spglib
def _lattice_groups_cached(lattice_key: tuple, symprec: float) -> tuple[Group, ...]:
    import spglib

    lattice = np.array(lattice_key, dtype=float).reshape(3, 3)
    data = spglib.get_symmetry_dataset((lattice, [[0.0, 0.0, 0.0]], [1]), symprec=symprec)
    # x_std = P x + p (spglib's convention); the standard-setting ops W, w become P^-1 W P and
    # P^-1 (W p + w - p) in the decoded basis.
    bases = [np.eye(3), np.zeros(3)]
    if data is not None:
        bases = [(np.asarray(data.transformation_matrix, float), np.asarray(data.origin_shift, float))]
        if not np.allclose(bases[0][0], np.eye(3)):
            bases.append((np.eye(3), np.zeros(3)))  # groups that fit the decoded cell as it is
    metric = lattice @ lattice.T
    scale = np.abs(metric).max()
    # Two settings can give one set of operations in the decoded basis (Pm-3m and Fm-3m in a primitive
    # fcc cell): keep the label of the one whose own translation lattice is the decoded lattice
    # (|det P^-1| / centring translations == 1), which is the group a crystal there really has.
    best: dict[tuple, tuple[float, Group]] = {}
    for P, p in bases:
        Pinv = np.linalg.inv(P)
        for hall in range(1, 531):
            ops = spglib.get_symmetry_from_database(hall)
            W = ops["rotations"].astype(float)
            R = np.einsum("ij,gjk,kl->gil", Pinv, W, P)
            if np.abs(R - np.rint(R)).max() > 1e-6:
                continue
            R = np.rint(R)
            # The operation must be a symmetry of the decoded lattice: R^T M R = M for the metric M.
            if np.abs(np.einsum("gji,jk,gkl->gil", R, metric, R) - metric).max() > 0.05 * scale:
                continue
            t = np.einsum("ij,gj->gi", Pinv, np.einsum("gij,j->gi", W, p) + ops["translations"] - p)
            R, t, key = _dedupe_ops(R, t)
            centring = int(sum(np.array_equal(w, np.eye(3)) for w in W))
            misfit = abs(np.log(abs(np.linalg.det(Pinv)) / centring))
            if key in best and best[key][0] <= misfit + 1e-9:
                continue
            sg = spglib.get_spacegroup_type(hall)
            best[key] = (misfit, Group(int(sg.number), hall, str(sg.international_short), R, t))
    groups = [g for _, g in best.values()]
    return tuple(groups)


def lattice_groups(lattice: np.ndarray, symprec: float = 0.05) -> tuple[Group, ...]:
    """Every space-group setting (of the 530 in spglib's database) that fits the lattice (rows a, b, c,
    Angstrom), expressed in its fractional basis; symprec (Angstrom) is the tolerance of the lattice's
    own symmetry."""
    key = tuple(np.round(np.asarray(lattice, float), 6).ravel())
    return _lattice_groups_cached(key, float(symprec))


def orbit(group: Group, x: np.ndarray) -> np.ndarray:
    """The distinct images [m, 3] (wrapped into [0, 1)) of one fractional point under the group."""
    pts = np.mod(group.apply(x[None, :])[:, 0, :], 1.0)
    same = np.abs(_wrap(pts[:, None, :] - pts[None, :, :])).max(-1) < _TOL  # [g, g]
    first = same.argmax(axis=1)  # the first image each image coincides with
    return pts[first == np.arange(len(pts))]


_SHIFTS = np.array(
    [[0, 0, 0]]
    + [[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1) if (i, j, k) != (0, 0, 0)],
    float,
)


@functools.lru_cache(maxsize=65536)
def _fixing(rot_key: tuple, trans_key: tuple) -> tuple[int, np.ndarray] | None:
    """(rotation order m, [k, 3] translations t + n over the lattice vectors n in {-1, 0, 1}^3 for which
    x -> R x + t + n has order m), or None when the operation fixes no point mod 1 (a screw or glide)."""
    R = np.array(rot_key, float).reshape(3, 3)
    t = np.array(trans_key, float)
    m = 1
    while m <= 6 and not np.allclose(np.linalg.matrix_power(R, m), np.eye(3)):
        m += 1
    powers = sum(np.linalg.matrix_power(R, k) for k in range(m))  # g^m x - x = powers @ (t + n)
    ts = t[None, :] + _SHIFTS
    ok = np.abs(ts @ powers.T).max(axis=1) < 1e-9
    return (m, ts[ok]) if ok.any() else None


def _project_to_fixed(x: np.ndarray, R: np.ndarray, m: int, ts: np.ndarray) -> np.ndarray:
    """The nearest (periodic) point to x on the fixed set of x -> R x + t (one of the translations ts):
    the centroid of the cyclic orbit x, g x, ..., g^(m-1) x of the candidate closest to x."""
    ys = np.broadcast_to(x, ts.shape).copy()
    acc = ys.copy()
    for _ in range(m - 1):
        ys = ys @ R.T + ts
        acc += ys
    c = acc / m
    k = int(np.abs(_wrap(c - x)).sum(axis=1).argmin())
    return x + _wrap(c[k] - x)


def _special_point(group: Group, rng: np.random.Generator) -> np.ndarray | None:
    """A random point on the fixed set of a random set of the group's operations (a random Wyckoff
    position; the general position when the set is empty), or None when they fix no common point."""
    x = rng.random(3)
    k = int(rng.choice([0, 0, 1, 1, 2, 2, 3, group.order]))
    if k == 0 or group.order == 1:
        return x
    ops = []
    for g in rng.choice(group.order, size=min(k, group.order), replace=False):
        fixing = _fixing(tuple(group.rot[g].ravel()), tuple(group.trans[g]))
        if fixing is None:
            if k < group.order:
                return None
            continue  # "all operations": the site symmetry of the nearest most-special point
        ops.append((group.rot[g], *fixing))
    # Alternating projections onto the nearest fixed sets converge onto a nearby common fixed point.
    for _ in range(12):
        for R, m, ts in ops:
            x = _project_to_fixed(x, R, m, ts)
    x = np.mod(x, 1.0)
    if len(ops) > 1:
        for R, m, ts in ops:
            if np.abs(_wrap(_project_to_fixed(x, R, m, ts) - x)).max() > 1e-7:
                return None
    return x


def _min_periodic_distance(
    a: np.ndarray, b: np.ndarray, lattice: np.ndarray, distinct: bool = False
) -> float:
    """Smallest Cartesian distance between fractional points a [n, 3] and b [m, 3] over the 27 nearest
    images (inf when either is empty); ``distinct``: a and b are one set, skip each point's own zero."""
    if len(a) == 0 or len(b) == 0:
        return np.inf
    d = _wrap(a[:, None, :] - b[None, :, :])  # [n, m, 3]
    cart = (d[:, :, None, :] + _SHIFTS[None, None]) @ lattice  # [n, m, 27, 3]
    r = np.sqrt((cart**2).sum(-1))
    if distinct:
        idx = np.arange(len(a))
        r[idx, idx, 0] = np.inf  # _SHIFTS[0] is the zero shift
    return float(r.min())


def symmetric_start(
    group: Group,
    numbers: list[int],
    lattice: np.ndarray,
    rng: np.random.Generator,
    *,
    min_dist: float = 1.0,
    attempts: int = 400,
) -> np.ndarray | None:
    """Random fractional positions [n, 3], atoms in the order of ``numbers`` (grouped by element), on
    orbits of ``group``, no two atoms (or images) closer than ``min_dist`` Angstrom; None when this group
    could not hold the composition within ``attempts`` random sites per element."""
    elements = sorted(set(numbers), key=numbers.index)
    placed: list[np.ndarray] = []
    by_element: dict[int, list[np.ndarray]] = {}
    for z in elements:
        remaining = numbers.count(z)
        sites: list[np.ndarray] = []
        tries = 0
        while remaining > 0:
            tries += 1
            if tries > attempts:
                return None
            x = _special_point(group, rng)
            if x is None:
                continue
            orb = orbit(group, x)
            m = len(orb)
            if m > remaining:
                continue
            if m > 1 and _min_periodic_distance(orb, orb, lattice, distinct=True) < min_dist:
                continue
            everything = np.concatenate(placed + sites) if (placed or sites) else np.zeros((0, 3))
            if _min_periodic_distance(orb, everything, lattice) < min_dist:
                continue
            sites.append(orb)
            remaining -= m
        by_element[z] = sites
        placed += sites
    return np.concatenate([np.concatenate(by_element[z]) for z in elements])


def site_permutations(
    group: Group, frac: np.ndarray, numbers: list[int], tol: float = 1e-3
) -> np.ndarray | None:
    """src [g, n]: for each operation g and atom j, the atom i that g maps onto j (g x_i = x_j mod 1, same
    element); None when the structure is not invariant under the group within ``tol`` (fractional)."""
    z = np.asarray(numbers)
    imgs = group.apply(frac)  # [g, n, 3]: image of atom i under g
    src = np.empty((group.order, len(frac)), dtype=np.int64)
    for g in range(group.order):
        d = np.abs(_wrap(imgs[g][:, None, :] - frac[None, :, :])).max(-1)  # [i, j]
        d[z[:, None] != z[None, :]] = np.inf
        dest = d.argmin(axis=1)
        if d[np.arange(len(frac)), dest].max() > tol or len(set(dest.tolist())) != len(frac):
            return None
        src[g, dest] = np.arange(len(frac))
    return src


class SymmetryProjector:
    """The orbit average, batched over replicas: f_j <- f_j + mean_g wrap(R_g f_src[g,j] + t_g - f_j).

    Built from (first atom of the replica, Group, src) per constrained replica. Only the atoms of those
    replicas are read and written: the others are left bit for bit as they are. It maps a structure onto
    the group's invariant positions (a projection: applying it twice changes nothing)."""

    def __init__(self, entries, dtype, device):
        dst, srcs, rot, trans, w = [], [], [], [], []
        for offset, group, src in entries:
            g, n = src.shape
            dst.append(offset + np.tile(np.arange(n), g))
            srcs.append(offset + src.reshape(-1))
            rot.append(np.repeat(group.rot, n, axis=0))
            trans.append(np.repeat(group.trans, n, axis=0))
            w.append(np.full(g * n, 1.0 / g))
        self.empty = not entries
        if self.empty:
            return
        as_t = functools.partial(torch.as_tensor, device=device)
        dst, srcs = np.concatenate(dst), np.concatenate(srcs)
        atoms = np.unique(dst)  # every atom of a constrained replica (src atoms are among them)
        self.atoms = as_t(atoms, dtype=torch.int64)
        self.dst = as_t(np.searchsorted(atoms, dst), dtype=torch.int64)  # indices into self.atoms
        self.src = as_t(np.searchsorted(atoms, srcs), dtype=torch.int64)
        self.rot = as_t(np.concatenate(rot), dtype=dtype)
        self.trans = as_t(np.concatenate(trans), dtype=dtype)
        self.w = as_t(np.concatenate(w), dtype=dtype)[:, None]

    def to(self, dtype) -> SymmetryProjector:
        if not self.empty:
            self.rot, self.trans, self.w = self.rot.to(dtype), self.trans.to(dtype), self.w.to(dtype)
        return self

    @torch.no_grad()
    def project_(self, pos: torch.Tensor, atom_cells: torch.Tensor) -> None:
        """Project Cartesian positions [N, 3] in place (atom_cells [N, 3, 3]: each atom's cell rows)."""
        if self.empty:
            return
        cells = atom_cells[self.atoms]
        frac = torch.linalg.solve(cells.transpose(1, 2), pos[self.atoms].unsqueeze(-1)).squeeze(-1)
        d = torch.einsum("mij,mj->mi", self.rot, frac[self.src]) + self.trans - frac[self.dst]
        d = d - torch.round(d)
        frac = frac + torch.zeros_like(frac).index_add_(0, self.dst, self.w * d)
        pos[self.atoms] = torch.einsum("nk,nkl->nl", frac, cells)


@_quiet_spglib
def detect_symmetry(
    frac: np.ndarray, numbers: list[int], lattice: np.ndarray, symprec: float
) -> tuple[Group, np.ndarray] | None:
    """The space group spglib finds in a structure within ``symprec`` Angstrom, as a Group in the
    structure's own basis, and the site permutations; None when only the identity is found."""
    import spglib

    data = spglib.get_symmetry_dataset((lattice, np.mod(frac, 1.0), list(numbers)), symprec=symprec)
    if data is None or data.number <= 1:
        return None
    R, t, _ = _dedupe_ops(np.asarray(data.rotations, float), np.asarray(data.translations, float))
    group = Group(int(data.number), int(data.hall_number), str(data.international), R, t)
    src = site_permutations(group, np.mod(frac, 1.0), numbers, tol=max(0.05, symprec))
    return None if src is None else (group, src)


# ------------------------------------------------------------------------------------------------
# Which groups to try: a prior from a training split
# ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def group_prior() -> dict[int, float]:
    """Space-group number -> prior weight (crystals in the prior's training split, + 1 for every group)."""
    counts = {}
    if GROUP_PRIOR_FILE.is_file():
        counts = {int(k): float(v) for k, v in json.loads(GROUP_PRIOR_FILE.read_text())["counts"].items()}
    return {n: counts.get(n, 0.0) + 1.0 for n in range(1, 231)}


def write_group_prior(csv_path: str | Path, out: Path = GROUP_PRIOR_FILE) -> dict[int, int]:
    """Count the `spacegroup.number` column of a CDVAE-format CSV into the prior file."""
    import pandas as pd

    col = pd.read_csv(csv_path, usecols=["spacegroup.number"])["spacegroup.number"]
    counts = {int(k): int(v) for k, v in col.value_counts().sort_index().items()}
    payload = {"source": str(csv_path), "column": "spacegroup.number", "counts": counts}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(out)
    return counts


def choose_start(
    lattice: np.ndarray,
    numbers: list[int],
    rng: np.random.Generator,
    *,
    min_dist: float,
    symprec: float = 0.05,
    max_groups: int = 12,
    min_order: int = 2,
) -> tuple[np.ndarray, Group, np.ndarray] | None:
    """A symmetric random start: (fractional positions, group, site permutations), the group drawn from
    those that fit the lattice with probability proportional to :func:`group_prior`; None when none of
    ``max_groups`` drawn groups could hold the composition."""
    groups = [g for g in lattice_groups(lattice, symprec) if g.order >= min_order]
    if not groups:
        return None
    prior = group_prior()
    per_number: dict[int, int] = {}
    for g in groups:
        per_number[g.number] = per_number.get(g.number, 0) + 1
    w = np.array([prior[g.number] / per_number[g.number] for g in groups])
    available = list(range(len(groups)))
    for _ in range(max_groups):
        if not available:
            return None
        p = w[available] / w[available].sum()
        k = available[int(rng.choice(len(available), p=p))]
        available.remove(k)
        frac = symmetric_start(groups[k], numbers, lattice, rng, min_dist=min_dist)
        if frac is None:
            continue
        src = site_permutations(groups[k], frac, numbers)
        if src is None:  # pragma: no cover - positions built on orbits are invariant by construction
            continue
        return frac, groups[k], src
    return None
