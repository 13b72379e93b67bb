"""Template starts: begin some trials from the structure of a training crystal with the same atom count
and the same pattern of element counts, mapped into the decoded cell (template-based crystal structure
prediction, as TCSP and prototype searches do).

Why (docs/reconstruction.md, "template starts"): started within ~0.3 A of the truth one descent finds the
global basin, but random starts (uniform or symmetric) almost never land that close in 7-20-atom cells.
Most crystals share their structure type with some known crystal: in a seeded sample of 200 MP-20 test
crystals, 178 have a crystal of the same atom count, element-count pattern and space group in
train_PARTIAL + val (198 share the count pattern). The fractional coordinates of such a prototype, with
its elements relabelled by role, put the start inside the basin of a structure of that type; the descent
then adjusts them to the target's EAD.

Only training splits are used as templates (never the split being reconstructed): the library is what a
generative model has seen anyway.

  * :class:`TemplateLibrary`: the crystals of one or more CDVAE-format files, Niggli-reduced as
    reconstruction targets are (srd.structures.canonicalize); cached per file digest.
  * :meth:`TemplateLibrary.starts`: the ``k`` best starts for a decoded target: templates of the same
    atom count and count pattern, ranked by how close their cell shape is to the decoded cell (over the
    axis permutations), elements assigned by count and, within equal counts, by electronegativity order.
    For a template screen (which ranks the starts by their loss) the pool is wider: every element
    assignment, site-wise starts from templates of the same atom count but another count pattern (the
    target's atoms on the template's sites by electronegativity rank), and each distinct start once.

Why site-wise starts and the deduplication (docs/reconstruction.md): the misses of the fast budget on
Perov-5 were mixed-anion and A = B perovskites (LiMoN2O, VMoSO2, Ta2NOF). Ta2NOF has no training crystal
of its count pattern with a doubled cation; the others had the right template in the library but not in
the 60 screened: Perov-5's cells are cubic, so the cell shape ranks thousands of templates equally, and
most of them map onto the same ideal start.
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_PERMS = list(itertools.permutations(range(3)))


@dataclass(frozen=True)
class Template:
    """One training crystal: its cell and its atoms grouped by element."""

    id: str
    lengths: np.ndarray  # [3] Angstrom
    angles: np.ndarray  # [3] degrees
    numbers: tuple[int, ...]  # element of each atom, grouped by element (ascending Z)
    frac: np.ndarray  # [n, 3] fractional coordinates in [0, 1)

    @property
    def pattern(self) -> tuple[int, ...]:
        return count_pattern(self.numbers)


def count_pattern(numbers: Sequence[int]) -> tuple[int, ...]:
    """The sorted element counts (e.g. (1, 1, 3) for ABX3): what a template and its target share."""
    return tuple(sorted(Counter(numbers).values()))


def _shape(lengths: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """A scale-free description of cells [..., 3] lengths and angles: [..., 6] log lengths over the cube
    root of the volume, then cos angles."""
    c = np.cos(np.radians(angles))
    vol = np.prod(lengths, axis=-1) * np.sqrt(
        np.maximum(1 - (c**2).sum(axis=-1) + 2 * np.prod(c, axis=-1), 1e-12)
    )
    return np.concatenate([np.log(lengths / vol[..., None] ** (1 / 3)), c], axis=-1)


@functools.cache
def _electronegativity(z: int) -> float:
    from pymatgen.core import Element

    x = Element.from_Z(z).X
    return float(x) if x == x else 0.0  # NaN for the noble gases


class TemplateLibrary:
    """Training crystals indexed by (atom count, element-count pattern)."""

    def __init__(self, templates: Sequence[Template], sources: Sequence[str] = ()):
        self.templates = list(templates)
        self.sources = list(sources)
        self._index: dict[tuple, list[int]] = {}
        for k, t in enumerate(self.templates):
            self._index.setdefault((len(t.numbers), t.pattern), []).append(k)
        # [templates, 6 axis permutations, 6] cell shapes, for vectorised ranking
        perms = np.array(_PERMS)  # a permutation of the axes permutes the lengths and the angles alike
        self._shapes = _shape(
            np.array([t.lengths for t in self.templates]).reshape(-1, 3)[:, perms],
            np.array([t.angles for t in self.templates]).reshape(-1, 3)[:, perms],
        )

    def provenance(self) -> list[dict]:
        """The library's files with their sha256 (recorded in a run's config.json)."""
        from ..utils import sha256_file

        return [{"path": str(Path(p).resolve()), "sha256": sha256_file(p)} for p in self.sources]

    def __len__(self) -> int:
        return len(self.templates)

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], *, show_progress: bool = False) -> TemplateLibrary:
        """Read (and cache per file content) every crystal of the CDVAE-format files ``paths``."""
        templates = []
        for p in paths:
            templates += _read_cached(Path(p), show_progress)
        return cls(templates, [str(p) for p in paths])

    def candidates(self, numbers: Sequence[int]) -> list[int]:
        """Indices of the templates with the atom count and count pattern of ``numbers``."""
        return self._index.get((len(numbers), count_pattern(numbers)), [])

    def starts(
        self,
        numbers: Sequence[int],
        lengths,
        angles,
        k: int,
        exclude: set[str] = frozenset(),
        assignments: int = 2,
    ) -> list[tuple[np.ndarray, str]]:
        """Up to ``k`` starts (fractional positions [n, 3] with atoms in the order of ``numbers``, template
        id) for a decoded target (``numbers`` grouped by element, ascending Z as Decoded has them).

        ``assignments`` <= 2 (template trials without a screen): templates of the same count pattern,
        closest cell shapes first, each with its best element assignment, then the second ones.

        ``assignments`` > 2 (the pool of a template screen, which ranks the starts by their loss): half
        the pool from templates of the same count pattern, every template's best assignment first, then
        the second ones and so on up to ``assignments``; the other half site-wise starts from templates of
        the same atom count whatever their pattern (:meth:`_place_sites`: a mixed-anion or A = B target
        has few templates of its own pattern, but the sites of its structure type); a start equal to an
        earlier one up to a translation is left out."""
        numbers = list(numbers)
        if k <= 0:
            return []
        target = _shape(np.asarray(lengths, float), np.asarray(angles, float))
        found = np.asarray(
            [i for i in self.candidates(numbers) if self.templates[i].id not in exclude], dtype=np.int64
        )
        dist = np.abs(self._shapes[found] - target).sum(axis=2)  # [candidates, perms]
        best_perm = dist.argmin(axis=1) if len(found) else np.zeros(0, np.int64)  # each template's best
        keep = np.argsort(dist[np.arange(len(found)), best_perm], kind="stable")[:k]
        # every template's best element assignment (closest cell shapes first), then the second ones, ...
        order = [(int(found[j]), _PERMS[int(best_perm[j])]) for j in keep]
        maps = [_assignments(self.templates[i].numbers, numbers, assignments) for i, _ in order]
        exact_starts = (
            (self._place(i, perm, m[r], numbers), self.templates[i].id)
            for r in range(assignments)
            for (i, perm), m in zip(order, maps)
            if r < len(m)
        )
        if assignments <= 2:
            return list(itertools.islice(exact_starts, k))
        site_starts = (
            (self._place_sites(i, perm, numbers), self.templates[i].id)
            for i, perm in self._same_size(numbers, target, exclude)
        )
        out, seen = [], set()

        def take(starts, until: int) -> None:
            for frac, tid in starts:
                if len(out) >= until:
                    return
                key = _start_key(frac)
                if key not in seen:
                    seen.add(key)
                    out.append((frac, tid))

        take(exact_starts, k - k // 2)
        take(site_starts, k)
        take(exact_starts, k)  # when the site-wise starts ran out (a generator resumes where it stopped)
        return out

    def _same_size(self, numbers, target, exclude) -> list[tuple[int, tuple[int, int, int]]]:
        """(template, best axis permutation) of every template with the atom count of ``numbers``, whatever
        its count pattern, closest cell shapes first."""
        n = len(numbers)
        idx = [
            i for (m, _), v in self._index.items() if m == n for i in v if self.templates[i].id not in exclude
        ]
        if not idx:
            return []
        idx = np.asarray(idx)
        dist = np.abs(self._shapes[idx] - target).sum(axis=2)
        bp = dist.argmin(axis=1)
        order = np.argsort(dist[np.arange(len(idx)), bp], kind="stable")
        return [(int(idx[j]), _PERMS[int(bp[j])]) for j in order]

    def _place_sites(self, i: int, perm, numbers: list[int]) -> np.ndarray:
        """The template's sites, axes permuted, given the target's atoms by electronegativity rank (the
        least electronegative atom on the least electronegative site), ordered like ``numbers``."""
        t = self.templates[i]
        frac = t.frac[:, list(perm)]
        site_order = sorted(range(len(t.numbers)), key=lambda a: (_electronegativity(t.numbers[a]), a))
        atom_order = sorted(
            range(len(numbers)), key=lambda a: (_electronegativity(numbers[a]), numbers[a], a)
        )
        x = np.empty_like(frac)
        for sa, ta in zip(site_order, atom_order):
            x[ta] = frac[sa]
        return np.mod(x, 1.0)

    def _place(self, i: int, perm, mapping: dict[int, int], numbers: list[int]) -> np.ndarray:
        """The template's atoms, its axes permuted, relabelled by ``mapping`` (template Z -> target Z) and
        ordered like ``numbers``."""
        t = self.templates[i]
        frac = t.frac[:, list(perm)]
        by_target = {z: [] for z in dict.fromkeys(numbers)}
        for zt, x in zip(t.numbers, frac):
            by_target[mapping[zt]].append(x)
        return np.mod(np.concatenate([np.array(by_target[z]) for z in dict.fromkeys(numbers)]), 1.0)


def _start_key(frac: np.ndarray) -> bytes:
    """A start's fractional positions up to a translation (the loss is translation invariant), on a
    0.02 grid: equal keys are the same start for the screen."""
    g = np.round(np.mod(frac - frac[0], 1.0) * 50).astype(np.int64) % 50
    return g.tobytes()


def _assignments(
    template_numbers: Sequence[int], numbers: Sequence[int], limit: int = 2
) -> list[dict[int, int]]:
    """Up to ``limit`` element maps template Z -> target Z that keep every element's count, best guess
    first: within each group of equal counts, the electronegativity order kept; then the reversed order;
    then the other permutations (what the template screen can choose from)."""

    def groups(nums):
        by_count: dict[int, list[int]] = {}
        for z, c in Counter(nums).items():
            by_count.setdefault(c, []).append(z)
        return {c: sorted(zs, key=lambda z: (_electronegativity(z), z)) for c, zs in by_count.items()}

    gt, gn = groups(template_numbers), groups(numbers)
    keys = sorted(gt)
    first = {zt: zn for c in keys for zt, zn in zip(gt[c], gn[c])}
    second = {zt: zn for c in keys for zt, zn in zip(gt[c], reversed(gn[c]))}
    out = [first] + ([second] if second != first else [])
    if len(out) < limit:
        for combo in itertools.product(*[itertools.permutations(gn[c]) for c in keys]):
            m = {zt: zn for c, perm in zip(keys, combo) for zt, zn in zip(gt[c], perm)}
            if m not in out:
                out.append(m)
            if len(out) >= limit:
                break
    return out[:limit]


def _read_cached(path: Path, show_progress: bool) -> list[Template]:
    """The templates of one file, from the cache (cache_root("templates"), keyed by the file's sha256)
    when it was read before. The cache holds plain arrays (numpy .npz, no pickles)."""
    from ..structures import canonicalize, read_structures
    from ..utils import cache_root, progress, sha256_file

    digest = sha256_file(path)
    cached = cache_root("templates") / f"{digest}.npz"
    if cached.is_file():
        try:
            z = np.load(cached, allow_pickle=False)
            return _unpack(z)
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: read the file again
    templates = []
    records = read_structures(path)
    for rec in progress(records, desc=f"templates {path.name}", disable=not show_progress):
        if rec.structure is None:
            continue
        try:
            s = canonicalize(rec.structure)
        except Exception:  # noqa: BLE001 - a template that cannot be reduced is simply not used
            continue
        s = s.get_sorted_structure(key=lambda site: site.specie.Z)
        templates.append(
            Template(
                rec.id,
                np.array(s.lattice.abc),
                np.array(s.lattice.angles),
                tuple(int(x) for x in s.atomic_numbers),
                np.mod(s.frac_coords, 1.0),
            )
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npz")
    counts = np.array([len(t.numbers) for t in templates])
    np.savez(
        tmp,
        ids=np.array([t.id for t in templates]),
        lengths=np.array([t.lengths for t in templates]).reshape(-1, 3),
        angles=np.array([t.angles for t in templates]).reshape(-1, 3),
        counts=counts,
        numbers=np.array([z for t in templates for z in t.numbers], dtype=np.int64),
        frac=np.concatenate([t.frac for t in templates]) if templates else np.zeros((0, 3)),
    )
    tmp.replace(cached)
    return templates


def _unpack(npz) -> list[Template]:
    z = {k: npz[k] for k in npz.files}  # an NpzFile reads an array again at every access: once each here
    ptr = np.concatenate([[0], np.cumsum(z["counts"])])
    return [
        Template(
            str(z["ids"][k]),
            z["lengths"][k],
            z["angles"][k],
            tuple(int(x) for x in z["numbers"][ptr[k] : ptr[k + 1]]),
            z["frac"][ptr[k] : ptr[k + 1]],
        )
        for k in range(len(z["counts"]))
    ]
