"""Crystals in and out: pymatgen/ASE structures, CIF/CSV/extxyz files, CDVAE-format .pt, ragged batches.

Everything that reads crystals from disk goes through :func:`read_structures`, which yields one
:class:`Record` per input crystal (an id, the structure or the reason it could not be read), so that one
bad row never stops a run and every skip can be reported.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Lattice, Structure

from .utils import atomic_torch_save, atomic_write_text, safe_torch_load

__all__ = [
    "Record",
    "Batch",
    "StructureReadError",
    "MAX_CIF_BYTES",
    "MAX_SITES",
    "parse_cif",
    "canonicalize",
    "read_structures",
    "count_structures",
    "read_csv_table",
    "write_cif",
    "cif_file_names",
    "cell_problem",
    "close_pair_problem",
    "MIN_VOLUME_PER_ATOM",
    "MIN_CELL_HEIGHT",
    "MIN_PAIR_DISTANCE",
    "records_to_list",
    "read_raw_items",
    "record_from_raw_item",
    "structure_from_arrays",
    "save_cdvae_pt",
    "load_cdvae_pt",
]

#: A CIF larger than this is rejected before parsing (bounds what a malformed or hostile file can cost).
MAX_CIF_BYTES = 2_000_000
#: A parsed structure with more sites than this is rejected (symmetry expansion can multiply sites).
MAX_SITES = 5_000

# Physical floors for the crystals srd featurises and reconstructs (checked by :func:`cell_problem` and
# :func:`close_pair_problem`, through srd.representation.prepare_structure and decode). The cost of the
# descriptor's image enumeration grows as 1 / volume, so a tiny or flat cell is refused before any work.
#: Smallest volume per atom (A^3). The densest solids are far above it (diamond 5.7, Li 20 A^3 / atom).
MIN_VOLUME_PER_ATOM = 1.0
#: Smallest distance between opposite faces of the (Niggli-reduced) cell (A): below it a cell is degenerate.
MIN_CELL_HEIGHT = 0.5
#: Atoms closer than this (A) are refused: CDVAE's structure-validity threshold (a real crystal's
#: shortest bond, H-H, is 0.74 A); two atoms at one place are the extreme case.
MIN_PAIR_DISTANCE = 0.5


class StructureReadError(ValueError):
    """A crystal could not be read; the message says why."""


@dataclass
class Record:
    """One input crystal: ``structure`` is None when it could not be read, and ``error`` says why."""

    id: str
    structure: Structure | None
    error: str | None = None


# ------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------
def canonicalize(structure: Structure, *, niggli: bool = True) -> Structure:
    """CDVAE's preprocessing (``build_crystal``): Niggli-reduce, then rebuild the lattice from its
    parameters (a standard orientation) with the same species and fractional coordinates."""
    crystal = structure.get_reduced_structure() if niggli else structure
    return Structure(
        lattice=Lattice.from_parameters(*crystal.lattice.parameters),
        species=crystal.species,
        coords=crystal.frac_coords,
        coords_are_cartesian=False,
    )


def cell_problem(matrix, n_atoms: int) -> str | None:
    """Why a cell (rows = lattice vectors, A) is unfit for ``n_atoms`` atoms, or None.

    Refused: non-finite or singular cells, a volume per atom below :data:`MIN_VOLUME_PER_ATOM` and a
    distance between opposite faces below :data:`MIN_CELL_HEIGHT` (degenerate angles or vectors).
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        return f"non-finite or malformed lattice {np.round(m, 4).tolist()}"
    volume = abs(float(np.linalg.det(m)))
    if volume < 1e-6:
        return f"the lattice is singular (volume {volume:.3g} A^3)"
    per_atom = volume / max(int(n_atoms), 1)
    if per_atom < MIN_VOLUME_PER_ATOM:
        return (
            f"volume per atom {per_atom:.3g} A^3 ({volume:.3g} A^3 for {n_atoms} atoms) is below the physical "
            f"minimum of {MIN_VOLUME_PER_ATOM:g} A^3"
        )
    faces = [np.cross(m[1], m[2]), np.cross(m[2], m[0]), np.cross(m[0], m[1])]
    heights = [volume / float(np.linalg.norm(f)) for f in faces]
    if min(heights) < MIN_CELL_HEIGHT:
        lengths = np.linalg.norm(m, axis=1)
        return (
            f"degenerate cell: the distance between opposite faces is {min(heights):.3g} A (minimum "
            f"{MIN_CELL_HEIGHT:g} A); lengths {np.round(lengths, 4).tolist()} A, heights "
            f"{np.round(heights, 4).tolist()} A"
        )
    return None


def close_pair_problem(structure: Structure) -> str | None:
    """Why ``structure`` has atoms too close together (the pair, its distance), or None.

    The closest pair over all periodic images comes from srd's exact nearest-pair search (two atoms at
    one place give 0); pairs closer than :data:`MIN_PAIR_DISTANCE` are refused.
    """
    from .descriptor import nearest_pairs

    pos = torch.tensor(np.array(structure.cart_coords), dtype=torch.float64)
    cell = torch.tensor(np.array(structure.lattice.matrix), dtype=torch.float64)[None]
    ptr = torch.tensor([0, len(structure)], dtype=torch.int64)
    index, shifts = nearest_pairs(pos, cell, ptr)
    i, j = (int(x) for x in index[0])
    if i < 0:
        return None
    d = float((pos[j] - pos[i] + shifts[0].double() @ cell[0]).norm())
    if d >= MIN_PAIR_DISTANCE:
        return None
    what = (
        "the same atom and its periodic image"
        if i == j
        else f"sites {i} ({structure[i].species_string}) and {j} ({structure[j].species_string})"
    )
    fi = np.round(structure[i].frac_coords, 4).tolist()
    fj = np.round(structure[j].frac_coords, 4).tolist()
    kind = "coincident atoms" if d == 0 else "overlapping atoms"
    return f"{kind}: {what} at fractional {fi} and {fj} are {d:.3g} A apart (minimum {MIN_PAIR_DISTANCE:g} A)"


def _check_structure(s: Structure, where: str) -> Structure:
    if len(s) == 0:
        raise StructureReadError(f"{where}: the structure has no sites")
    if len(s) > MAX_SITES:
        raise StructureReadError(f"{where}: {len(s)} sites exceed the limit of {MAX_SITES}")
    if not s.is_ordered:
        raise StructureReadError(f"{where}: partial occupancies (disordered sites) are not supported")
    lat = s.lattice.matrix
    if not np.all(np.isfinite(lat)) or not np.all(np.isfinite(s.frac_coords)):
        raise StructureReadError(f"{where}: non-finite lattice or coordinates")
    if abs(s.lattice.volume) < 1e-6:
        raise StructureReadError(f"{where}: the lattice is singular (volume {s.lattice.volume:.3g} A^3)")
    return s


def parse_cif(text: str, *, where: str = "cif") -> Structure:
    """Parse one CIF string into a Structure, with bounded cost and a clear error when it fails."""
    if not isinstance(text, str) or not text.strip():
        raise StructureReadError(f"{where}: empty CIF")
    if len(text) > MAX_CIF_BYTES:
        raise StructureReadError(f"{where}: CIF of {len(text)} bytes exceeds the limit of {MAX_CIF_BYTES}")
    if "_atom_site_" not in text.lower():
        raise StructureReadError(f"{where}: unreadable CIF (no atom sites: no _atom_site_ loop, 0 atoms)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_str(text, fmt="cif")
    except ZeroDivisionError:
        # pymatgen's symmetry expansion of an empty _atom_site loop divides by the number of sites
        raise StructureReadError(
            f"{where}: unreadable CIF (no atom sites: the _atom_site loop lists 0 atoms)"
        ) from None
    except Exception as err:  # noqa: BLE001 - pymatgen raises many types
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "no structures" in msg.lower():
            msg += "; the CIF may list no atoms, only partial occupancies, or atoms that coincide"
        raise StructureReadError(f"{where}: unreadable CIF ({msg[:300]})") from None
    return _check_structure(s, where)


# ------------------------------------------------------------------------------------------------
# Reading files
# ------------------------------------------------------------------------------------------------
def read_csv_table(path: str | os.PathLike):
    """A CDVAE-format CSV(.gz) as a pandas DataFrame (must have a ``cif`` column)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such CSV file: {path}")
    df = pd.read_csv(path)
    if "cif" not in df.columns:
        raise ValueError(f"{path}: a CDVAE-format CSV needs a 'cif' column; found {list(df.columns)}")
    return df


def _positions(n: int, limit: int | None, rows: Sequence[int] | None) -> Sequence[int]:
    """The positions to read out of n crystals: the first ``limit``, the given ``rows``, or all."""
    if rows is None:
        return range(n if limit is None else min(limit, n))
    bad = [r for r in rows if not 0 <= r < n]
    if bad:
        raise ValueError(f"row(s) {bad[:5]} out of range: the input holds {n} crystals (rows 0 to {n - 1})")
    return rows


def _csv_records(
    path: Path, limit: int | None, id_column: str, rows: Sequence[int] | None = None
) -> Iterator[Record]:
    df = read_csv_table(path)
    ids = df[id_column].astype(str).tolist() if id_column in df.columns else [str(i) for i in range(len(df))]
    for row in _positions(len(df), limit, rows):
        rid = ids[row]
        where = (
            f"{path.name} row {row} ({id_column}={rid})"
            if id_column in df.columns
            else f"{path.name} row {row}"
        )
        try:
            s = parse_cif(df["cif"].iloc[row], where=where)
            yield Record(rid, s)
        except StructureReadError as err:
            yield Record(rid, None, str(err))


def _cif_folder_records(path: Path, limit: int | None, rows: Sequence[int] | None = None) -> Iterator[Record]:
    files = sorted(path.glob("*.cif"))
    if not files:
        raise ValueError(f"{path}: the folder contains no .cif files")
    for f in (files[k] for k in _positions(len(files), limit, rows)):
        try:
            if f.stat().st_size > MAX_CIF_BYTES:
                raise StructureReadError(
                    f"{f.name}: {f.stat().st_size} bytes exceeds the limit of {MAX_CIF_BYTES}"
                )
            yield Record(f.stem, parse_cif(f.read_text(errors="replace"), where=f.name))
        except StructureReadError as err:
            yield Record(f.stem, None, str(err))


def _extxyz_frames(path: Path, limit: int | None) -> Iterator[tuple[int, int, str | None, str | None]]:
    """Split an extxyz file into frames without parsing them: yields (frame, first line, text, error).

    A frame is an atom-count line, a comment line and that many atom lines. A frame that is cut short (a
    truncated last frame) or declares more than MAX_SITES atoms yields an error for that frame only; a
    count line that is not a number ends the file there (the frames after it cannot be located).
    """
    with open(path, errors="replace") as f:
        line_no = 0
        k = 0
        while limit is None or k < limit:
            head = f.readline()
            line_no += 1
            if not head:
                return
            if not head.strip():
                continue  # blank lines between frames
            start = line_no
            try:
                n = int(head.split()[0])
            except ValueError:
                yield (
                    k,
                    start,
                    None,
                    (
                        f"line {start}: expected the atom count of frame {k}, found {head.strip()[:60]!r}; "
                        "the rest of the file is skipped"
                    ),
                )
                return
            if n < 0 or n > MAX_SITES:
                for _ in range(max(n, 0) + 1):  # skip the frame without holding it in memory
                    if not f.readline():
                        break
                    line_no += 1
                yield k, start, None, f"declares {n} atoms (the limit is {MAX_SITES}; at least 1)"
                k += 1
                continue
            lines = [head]
            for _ in range(n + 1):
                line = f.readline()
                if not line:
                    break
                line_no += 1
                lines.append(line)
            if len(lines) < n + 2:
                yield (
                    k,
                    start,
                    None,
                    (f"truncated: declares {n} atoms but the file ends after {max(len(lines) - 2, 0)}"),
                )
                return
            yield k, start, "".join(lines), None
            k += 1


def _extxyz_records(path: Path, limit: int | None, rows: Sequence[int] | None = None) -> Iterator[Record]:
    """One Record per extxyz frame (only the frames numbered in ``rows`` when given, the others are not
    parsed); a bad frame (truncated, singular cell, unparsable) is recorded and the other frames go on."""
    import io

    from ase.io import read as ase_read
    from pymatgen.io.ase import AseAtomsAdaptor

    wanted = None if rows is None else set(rows)
    if wanted is not None:
        _positions(count_structures(path), None, sorted(wanted))  # out-of-range rows are an error
    for k, line, text, error in _extxyz_frames(path, limit):
        if wanted is not None and k not in wanted:
            continue
        where = f"{path.name} frame {k} (line {line})"
        if error is not None:
            yield Record(str(k), None, f"{where}: {error}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                atoms = ase_read(io.StringIO(text), format="extxyz")
        except Exception as err:  # noqa: BLE001 - ASE raises many types
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            yield Record(str(k), None, f"{where}: unreadable frame ({msg[:200]})")
            continue
        rid = str(atoms.info.get("material_id", k))
        try:
            if not all(atoms.pbc):
                raise StructureReadError(
                    f"{where}: not periodic in all three directions (pbc={list(atoms.pbc)})"
                )
            cell = np.asarray(atoms.cell.array, dtype=float)
            if not np.all(np.isfinite(cell)) or abs(np.linalg.det(cell)) < 1e-6:
                raise StructureReadError(
                    f"{where}: the lattice is singular or not finite ({np.round(cell, 4).tolist()})"
                )
            s = AseAtomsAdaptor.get_structure(atoms)
            yield Record(rid, _check_structure(s, where))
        except StructureReadError as err:
            yield Record(rid, None, str(err))
        except Exception as err:  # noqa: BLE001 - e.g. pymatgen refusing the cell
            yield Record(rid, None, f"{where}: cannot build a structure ({type(err).__name__}: {err})")


def _pt_records(path: Path, limit: int | None, rows: Sequence[int] | None = None) -> Iterator[Record]:
    crystals = load_cdvae_pt(path)
    for k in _positions(len(crystals), limit, rows):
        s = crystals[k]
        if isinstance(s, Structure):
            yield Record(str(k), s)
        else:
            yield Record(str(k), None, f"{path.name} crystal {k}: {s}")


def read_structures(
    path: str | os.PathLike,
    *,
    limit: int | None = None,
    rows: Sequence[int] | None = None,
    id_column: str = "material_id",
) -> Iterator[Record]:
    """Yield a :class:`Record` for every crystal in ``path``.

    ``path`` may be a CSV(.gz) with a ``cif`` column (ids from ``id_column`` when present, else the row
    number), a folder of ``*.cif`` files (ids = file stems), a single ``.cif``, an extxyz file, or a
    CDVAE-format ``.pt`` (eval_gen.pt / eval_recon.pt; ids = index).

    ``limit`` reads only the first crystals; ``rows`` (increasing 0-based positions in the input, as
    counted by :func:`count_structures`; mutually exclusive with ``limit``) reads only those crystals and
    does not parse the others. Ids and error locations stay those of the whole input.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if limit is not None and rows is not None:
        raise ValueError("read_structures: give limit or rows, not both")
    rows = None if rows is None else [int(r) for r in rows]
    name = path.name.lower()
    if path.is_dir():
        yield from _cif_folder_records(path, limit, rows)
    elif name.endswith((".csv", ".csv.gz")):
        yield from _csv_records(path, limit, id_column, rows)
    elif name.endswith(".cif"):
        if rows is not None:
            _positions(1, None, rows)
            if not rows:
                return
        try:
            yield Record(path.stem, parse_cif(path.read_text(errors="replace"), where=path.name))
        except StructureReadError as err:
            yield Record(path.stem, None, str(err))
    elif name.endswith((".extxyz", ".xyz")):
        yield from _extxyz_records(path, limit, rows)
    elif name.endswith(".pt"):
        yield from _pt_records(path, limit, rows)
    else:
        raise ValueError(
            f"{path}: unknown input kind; expected a CSV(.gz) with a 'cif' column, a folder of .cif files, "
            "a .cif, an .extxyz or a CDVAE-format .pt"
        )


def count_structures(path: str | os.PathLike) -> int:
    """How many Records :func:`read_structures` yields for ``path`` (without parsing any crystal, except for
    a CDVAE-format .pt): CSV data rows, .cif files of a folder, extxyz frames."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    name = path.name.lower()
    if path.is_dir():
        n = len(list(path.glob("*.cif")))
        if not n:
            raise ValueError(f"{path}: the folder contains no .cif files")
        return n
    if name.endswith((".csv", ".csv.gz")):
        return len(read_csv_table(path))
    if name.endswith(".cif"):
        return 1
    if name.endswith((".extxyz", ".xyz")):
        return sum(1 for _ in _extxyz_frames(path, None))
    if name.endswith(".pt"):
        return len(load_cdvae_pt(path))
    raise ValueError(
        f"{path}: unknown input kind; expected a CSV(.gz) with a 'cif' column, a folder of .cif files, "
        "a .cif, an .extxyz or a CDVAE-format .pt"
    )


def read_raw_items(
    path: str | os.PathLike, *, limit: int | None = None, id_column: str = "material_id"
) -> list[tuple]:
    """The crystals of ``path`` as unparsed items, for parsing in worker processes.

    CSV rows and CIF files become ("cif", id, text, where); other kinds are parsed here and become
    ("record", Record). :func:`record_from_raw_item` turns an item into a Record.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        files = sorted(path.glob("*.cif"))[:limit]
        if not files:
            raise ValueError(f"{path}: the folder contains no .cif files")
        items = []
        for f in files:
            if f.stat().st_size > MAX_CIF_BYTES:
                items.append(
                    (
                        "record",
                        Record(
                            f.stem,
                            None,
                            f"{f.name}: {f.stat().st_size} bytes exceeds the limit of {MAX_CIF_BYTES}",
                        ),
                    )
                )
            else:
                items.append(("cif", f.stem, f.read_text(errors="replace"), f.name))
        return items
    if name.endswith((".csv", ".csv.gz")):
        df = read_csv_table(path)
        has_id = id_column in df.columns
        ids = df[id_column].astype(str).tolist() if has_id else [str(i) for i in range(len(df))]
        n = len(df) if limit is None else min(limit, len(df))
        cifs = df["cif"].tolist()
        return [
            (
                "cif",
                ids[k],
                cifs[k],
                f"{path.name} row {k} ({id_column}={ids[k]})" if has_id else f"{path.name} row {k}",
            )
            for k in range(n)
        ]
    return [("record", r) for r in read_structures(path, limit=limit, id_column=id_column)]


def record_from_raw_item(item: tuple) -> Record:
    if item[0] == "record":
        return item[1]
    _, rid, text, where = item
    try:
        return Record(rid, parse_cif(text, where=where))
    except StructureReadError as err:
        return Record(rid, None, str(err))


#: Longest file stem made from an id (file systems allow 255 bytes; room is left for a suffix).
_MAX_STEM = 120


def cif_file_names(ids: Sequence[str]) -> list[str]:
    """Safe, unique CIF file names for crystal ids, in order: the mapping every srd tool uses.

    Characters other than letters, digits and ``-_.+=`` become ``_``, a leading dot is escaped (no hidden
    files), long ids are cut. Ids that then collide (``x/y``, ``x_y`` and ``x y``; or ``A`` and ``a`` on a
    case-insensitive file system) keep the plain name for the first and get ``~2``, ``~3``, ... after it, in
    input order, so the mapping depends only on the list of ids. Writers record it (results.csv ``file``).
    """
    names: list[str] = []
    taken: set[str] = set()
    for rid in ids:
        stem = "".join(c if c.isascii() and (c.isalnum() or c in "-_.+=") else "_" for c in str(rid))
        stem = stem[:_MAX_STEM] or "crystal"
        if stem.startswith("."):
            stem = "_" + stem[1:]
        name, k = stem, 1
        while name.lower() in taken:
            k += 1
            name = f"{stem}~{k}"
        taken.add(name.lower())
        names.append(name + ".cif")
    return names


def write_cif(path: str | os.PathLike, structure: Structure) -> None:
    """Write a CIF atomically."""
    from pymatgen.io.cif import CifWriter

    atomic_write_text(path, str(CifWriter(structure)))


# ------------------------------------------------------------------------------------------------
# Ragged batches for the descriptor
# ------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """Crystals concatenated for :func:`srd.ead_batch`: atoms of crystal b are ``ptr[b]:ptr[b+1]``."""

    positions: torch.Tensor  # [N, 3] Cartesian, Angstrom
    numbers: torch.Tensor  # [N] int64
    cells: torch.Tensor  # [B, 3, 3] rows = lattice vectors
    ptr: torch.Tensor  # [B + 1] int64

    @property
    def n_crystals(self) -> int:
        return self.cells.shape[0]

    @property
    def counts(self) -> torch.Tensor:
        return self.ptr[1:] - self.ptr[:-1]

    @property
    def crystal_index(self) -> torch.Tensor:
        """[N] crystal id of every atom."""
        return torch.repeat_interleave(torch.arange(self.n_crystals, device=self.ptr.device), self.counts)

    @classmethod
    def from_structures(
        cls, structures: Sequence[Structure], *, dtype=torch.float64, device: str | torch.device = "cpu"
    ) -> Batch:
        if len(structures) == 0:
            raise ValueError("Batch.from_structures: no structures given")
        pos = np.concatenate([s.cart_coords for s in structures], axis=0)
        num = np.concatenate([np.array(s.atomic_numbers, dtype=np.int64) for s in structures])
        cells = np.stack([s.lattice.matrix for s in structures])
        counts = np.array([len(s) for s in structures], dtype=np.int64)
        ptr = np.concatenate([[0], np.cumsum(counts)])
        return cls(
            torch.as_tensor(pos, dtype=dtype, device=device),
            torch.as_tensor(num, dtype=torch.int64, device=device),
            torch.as_tensor(cells, dtype=dtype, device=device),
            torch.as_tensor(ptr, dtype=torch.int64, device=device),
        )

    def to_structures(self) -> list[Structure]:
        pos = self.positions.detach().cpu().double().numpy()
        num = self.numbers.cpu().numpy()
        cells = self.cells.detach().cpu().double().numpy()
        ptr = self.ptr.cpu().numpy()
        return [
            Structure(
                Lattice(cells[b]),
                num[ptr[b] : ptr[b + 1]].tolist(),
                pos[ptr[b] : ptr[b + 1]],
                coords_are_cartesian=True,
            )
            for b in range(len(cells))
        ]


# ------------------------------------------------------------------------------------------------
# CDVAE-format .pt files (scripts/evaluate.py of txie-93/cdvae): every array has a leading
# "num_evals" dimension; frac_coords [E, N, 3], atom_types [E, N], lengths [E, B, 3], angles [E, B, 3]
# (degrees), num_atoms [E, B]. Files without the num_evals dimension (every key one rank less) are
# accepted too. Everything is checked for consistency before any crystal is built (_cdvae_arrays).
# ------------------------------------------------------------------------------------------------
#: A CDVAE-format file whose evaluation holds more atoms or crystals than this is refused before any
#: crystal is built (bounds what a malformed or hostile file can cost; CDVAE's own files hold ~10^5 atoms).
MAX_CDVAE_ATOMS = 20_000_000
MAX_CDVAE_CRYSTALS = 2_000_000
#: The largest atomic number accepted in ``atom_types``.
MAX_ATOMIC_NUMBER = 118

_CDVAE_KEYS = ("frac_coords", "atom_types", "lengths", "angles", "num_atoms")
#: Per key: the layout of one evaluation (without num_evals) and its number of dimensions.
_CDVAE_LAYOUT = {
    "frac_coords": ("N, 3", 2),
    "atom_types": ("N", 1),
    "lengths": ("B, 3", 2),
    "angles": ("B, 3", 2),
    "num_atoms": ("B", 1),
}


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def _one_hot_error(path, t: torch.Tensor) -> ValueError:
    return ValueError(
        f"{path}: atom_types has shape {_shape(t)}; expected atomic numbers [N] (or [num_evals, N]), one "
        "integer per atom (one-hot atom types are not CDVAE's format: convert with argmax + 1)"
    )


def _integers(path, key: str, t: torch.Tensor, what: str) -> np.ndarray:
    """``t`` as int64, refusing non-integral values (integer-valued floats are accepted)."""
    if not t.is_floating_point():
        return t.numpy().astype(np.int64, copy=False)
    a = t.double().numpy()
    bad = ~np.isfinite(a) | (a != np.round(a))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}: {key} must hold integer {what}; found {float(a[i])!r} at {key}[{i}] "
            f"({int(bad.sum())} non-integer value(s), dtype {str(t.dtype).replace('torch.', '')})"
        )
    if len(a) and np.abs(a).max() >= 2**62:
        raise ValueError(f"{path}: {key} holds values too large to be {what} (up to {np.abs(a).max():.3g})")
    return a.astype(np.int64)


def _cdvae_arrays(data, path, eval_index: int):
    """Check a loaded CDVAE-format dict for internal consistency and return one evaluation of it as NumPy
    arrays (frac [N, 3] float64, types [N] int64, lengths [B, 3], angles [B, 3] float64, counts [B] int64).

    Raises ValueError naming the file, the key, what was expected and what was found. Per-crystal problems
    (non-finite values, impossible lattices) are not errors here: :func:`load_cdvae_pt` reports them per
    crystal.
    """
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: not a CDVAE-format file; expected a dict with keys {list(_CDVAE_KEYS)}, "
            f"found a {type(data).__name__}"
        )
    missing = [k for k in _CDVAE_KEYS if k not in data]
    if missing:
        raise ValueError(
            f"{path}: not a CDVAE-format file; missing key(s) {missing}: expected keys {list(_CDVAE_KEYS)}, "
            f"found {[str(k) for k in data][:20]}"
        )
    arrays = {}
    for k in _CDVAE_KEYS:
        try:
            t = torch.as_tensor(data[k])
        except Exception as err:  # noqa: BLE001 - ragged lists, strings, objects
            raise ValueError(
                f"{path}: {k} is not a numeric array ({type(data[k]).__name__}: {str(err)[:200]})"
            ) from None
        if t.dtype == torch.bool or t.is_complex():
            raise ValueError(f"{path}: {k} has dtype {str(t.dtype).replace('torch.', '')}; expected numbers")
        arrays[k] = t.detach().cpu()

    # CDVAE files carry a leading num_evals dimension; files without it are accepted, consistently.
    num_atoms = arrays["num_atoms"]
    if num_atoms.dim() not in (1, 2):
        raise ValueError(
            f"{path}: num_atoms has shape {_shape(num_atoms)}; expected [num_evals, B] or [B] "
            "(the number of atoms of each crystal)"
        )
    has_eval = num_atoms.dim() == 2
    where = (
        f"with the num_evals dimension, as num_atoms {_shape(num_atoms)}"
        if has_eval
        else f"without a num_evals dimension, as num_atoms {_shape(num_atoms)}"
    )
    for k in _CDVAE_KEYS:
        layout, rank = _CDVAE_LAYOUT[k]
        t = arrays[k]
        want = rank + has_eval
        expected = f"[num_evals, {layout}]" if has_eval else f"[{layout}]"
        if k == "atom_types" and t.dim() == want + 1:
            raise _one_hot_error(path, t)
        if t.dim() != want:
            raise ValueError(f"{path}: {k} has shape {_shape(t)}; expected {expected} ({where})")
        if rank == 2 and t.shape[-1] != 3:
            raise ValueError(f"{path}: {k} has shape {_shape(t)}; expected {expected} (3 values per row)")
    if has_eval:
        n_evals = int(num_atoms.shape[0])
        for k in _CDVAE_KEYS:
            t = arrays[k]
            if t.shape[0] != n_evals:
                if k == "atom_types" and t.shape[0] == arrays["frac_coords"].shape[1] and t.shape[1] > 1:
                    raise _one_hot_error(path, t)
                raise ValueError(
                    f"{path}: {k} has shape {_shape(t)}, i.e. num_evals = {t.shape[0]}; expected num_evals = "
                    f"{n_evals} as in num_atoms {_shape(num_atoms)} (every key needs the same leading dimension)"
                )
        if not isinstance(eval_index, int | np.integer) or not 0 <= eval_index < n_evals:
            raise ValueError(
                f"{path}: eval_index {eval_index!r} is out of range; the file holds num_evals = {n_evals} "
                f"(valid indices 0..{n_evals - 1})"
            )
        arrays = {k: t[eval_index] for k, t in arrays.items()}
    elif eval_index != 0:
        raise ValueError(
            f"{path}: eval_index {eval_index!r} is out of range; the file has no num_evals dimension "
            "(one evaluation, index 0)"
        )

    n_atoms, n_crystals = int(arrays["atom_types"].shape[0]), int(arrays["num_atoms"].shape[0])
    if n_atoms > MAX_CDVAE_ATOMS or n_crystals > MAX_CDVAE_CRYSTALS:
        raise ValueError(
            f"{path}: {n_atoms} atoms in {n_crystals} crystals exceed the limits of {MAX_CDVAE_ATOMS} atoms "
            f"and {MAX_CDVAE_CRYSTALS} crystals per evaluation (srd.structures.MAX_CDVAE_ATOMS / MAX_CDVAE_CRYSTALS)"
        )
    counts = _integers(path, "num_atoms", arrays["num_atoms"], "atom counts")
    bad = np.flatnonzero(counts < 1)
    if len(bad):
        b = int(bad[0])
        raise ValueError(
            f"{path}: num_atoms[{b}] = {int(counts[b])}: crystal {b} must have at least one atom "
            f"(expected num_atoms >= 1; {len(bad)} crystal(s) with num_atoms < 1)"
        )
    for k in ("lengths", "angles"):
        if arrays[k].shape[0] != n_crystals:
            raise ValueError(
                f"{path}: {k} has {arrays[k].shape[0]} rows but num_atoms lists {n_crystals} crystals; "
                f"expected one row of {k} per crystal (len(lengths) == len(angles) == len(num_atoms))"
            )
    total = int(counts.sum()) if counts.max(initial=0) <= MAX_CDVAE_ATOMS else None
    for k in ("atom_types", "frac_coords"):
        if total != arrays[k].shape[0]:
            found = f"more than {MAX_CDVAE_ATOMS}" if total is None else f"{total}"
            raise ValueError(
                f"{path}: num_atoms sums to {found} atoms but {k} holds {arrays[k].shape[0]}; expected "
                "sum(num_atoms) == len(atom_types) == len(frac_coords)"
                + ("" if total is not None else f" (num_atoms holds a count of {int(counts.max())})")
            )
    types = _integers(path, "atom_types", arrays["atom_types"], "atomic numbers")
    bad = np.flatnonzero((types < 1) | (types > MAX_ATOMIC_NUMBER))
    if len(bad):
        i = int(bad[0])
        b = int(np.searchsorted(np.cumsum(counts), i, side="right"))
        raise ValueError(
            f"{path}: atom_types[{i}] = {int(types[i])} (crystal {b}) is not an atomic number 1..{MAX_ATOMIC_NUMBER}; "
            f"expected atomic numbers, one per atom ({len(bad)} atom(s) out of range)"
        )
    return (
        arrays["frac_coords"].double().numpy(),
        types,
        arrays["lengths"].double().numpy(),
        arrays["angles"].double().numpy(),
        counts,
    )


def _crystal_problems(frac, lengths, angles, counts) -> list[str | None]:
    """Per crystal: why it cannot be built (non-finite values, an impossible lattice, too many atoms) or None."""
    n_crystals = len(counts)
    crystal_of_atom = np.repeat(np.arange(n_crystals), counts)
    frac_bad = np.zeros(n_crystals, dtype=bool)
    np.logical_or.at(frac_bad, crystal_of_atom, ~np.isfinite(frac).all(axis=1))
    with np.errstate(invalid="ignore"):
        cos = np.cos(np.radians(angles))
        volume_term = 1.0 - (cos**2).sum(axis=1) + 2.0 * cos.prod(axis=1)
        angles_ok = ((angles > 0) & (angles < 180)).all(axis=1) & (volume_term > 0)
    out: list[str | None] = []
    for b in range(n_crystals):
        ln, an = lengths[b], angles[b]
        if not np.isfinite(ln).all():
            out.append(f"non-finite lattice lengths {ln.tolist()}")
        elif not (ln > 0).all():
            out.append(f"lattice lengths {ln.tolist()} are not positive")
        elif not np.isfinite(an).all():
            out.append(f"non-finite lattice angles {an.tolist()}")
        elif not angles_ok[b]:
            out.append(f"lattice angles {an.tolist()} (degrees) do not make a cell of positive volume")
        elif frac_bad[b]:
            out.append("non-finite frac_coords")
        elif counts[b] > MAX_SITES:
            out.append(f"{int(counts[b])} atoms exceed the limit of {MAX_SITES}")
        else:
            out.append(None)
    return out


def structure_from_arrays(frac_coords, atom_types, lengths, angles) -> Structure:
    """One crystal from CDVAE arrays (angles in degrees)."""
    lattice = Lattice.from_parameters(*[float(x) for x in lengths], *[float(x) for x in angles])
    return Structure(
        lattice,
        [int(z) for z in atom_types],
        np.asarray(frac_coords, dtype=float),
        coords_are_cartesian=False,
    )


def save_cdvae_pt(path: str | os.PathLike, structures: Sequence[Structure | None], **extra) -> None:
    """Write crystals in CDVAE's eval_gen.pt / eval_recon.pt layout (num_evals = 1), atomically.

    A ``None`` (a crystal that could not be produced) is written as a one-atom placeholder with
    zero lattice lengths, which CDVAE's evaluator counts as invalid and :func:`load_cdvae_pt` reads as an
    invalid entry, keeping indices aligned.
    """
    frac, types, lengths, angles, counts = [np.zeros((0, 3))], [np.zeros(0, dtype=np.int64)], [], [], []
    for s in structures:
        if s is None:
            frac.append(np.zeros((1, 3)))
            types.append(np.ones(1, dtype=np.int64))
            lengths.append([0.0, 0.0, 0.0])
            angles.append([90.0, 90.0, 90.0])
            counts.append(1)
            continue
        frac.append(np.asarray(s.frac_coords, dtype=float))
        types.append(np.array(s.atomic_numbers, dtype=np.int64))
        lengths.append(list(s.lattice.abc))
        angles.append(list(s.lattice.angles))
        counts.append(len(s))
    out = {
        "frac_coords": torch.tensor(np.concatenate(frac), dtype=torch.float32)[None],
        "atom_types": torch.tensor(np.concatenate(types), dtype=torch.int64)[None],
        "lengths": torch.tensor(np.reshape(lengths, (-1, 3)), dtype=torch.float32)[None],
        "angles": torch.tensor(np.reshape(angles, (-1, 3)), dtype=torch.float32)[None],
        "num_atoms": torch.tensor(counts, dtype=torch.int64)[None],
    }
    out.update(extra)
    atomic_torch_save(out, path)


def cdvae_num_evals(path: str | os.PathLike) -> int:
    """num_evals of a CDVAE-format .pt (1 for a file without the leading num_evals dimension)."""
    import argparse

    with torch.serialization.safe_globals([argparse.Namespace]):
        data = safe_torch_load(Path(path), what="CDVAE-format file")
    _cdvae_arrays(data, path, 0)
    num_atoms = torch.as_tensor(data["num_atoms"])
    return int(num_atoms.shape[0]) if num_atoms.dim() == 2 else 1


def load_cdvae_pt(path: str | os.PathLike, *, eval_index: int = 0) -> list[Structure | str]:
    """Read the crystals of a CDVAE-format .pt (one entry per crystal: a Structure, or why it failed).

    The file is first checked for internal consistency (ranks, num_evals, sum(num_atoms) == len(atom_types)
    == len(frac_coords), len(lengths) == len(angles) == len(num_atoms), counts >= 1, atomic numbers
    1..118, size limits); a file that fails raises ValueError naming the file and the key. A crystal whose
    own values are unusable (non-finite frac_coords, lengths or angles, non-positive lengths, angles of no
    positive-volume cell, more than MAX_SITES atoms) becomes an ``"invalid crystal (<why>)"`` entry.

    Loaded with ``weights_only=True``; files whose extra entries hold pickled objects (CDVAE writes an
    argparse.Namespace and a torch_geometric batch) are read with only argparse.Namespace allowed.
    """
    import argparse

    path = Path(path)
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = safe_torch_load(path, what="CDVAE-format file")
    frac, types, lengths, angles, counts = _cdvae_arrays(data, path, eval_index)
    problems = _crystal_problems(frac, lengths, angles, counts)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    out: list[Structure | str] = []
    for b, problem in enumerate(problems):
        if problem is not None:
            out.append(f"invalid crystal ({problem})")
            continue
        sl = slice(int(ptr[b]), int(ptr[b + 1]))
        try:
            out.append(structure_from_arrays(frac[sl], types[sl], lengths[b], angles[b]))
        except Exception as err:  # noqa: BLE001 - pymatgen raises many types
            out.append(f"invalid crystal ({type(err).__name__}: {str(err)[:200]})")
    return out


def records_to_list(records: Iterable[Record]) -> tuple[list[Record], list[Record]]:
    """Split records into (readable, failed)."""
    ok, bad = [], []
    for r in records:
        (ok if r.structure is not None else bad).append(r)
    return ok, bad
