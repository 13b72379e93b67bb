"""Crystals in and out: pymatgen/ASE structures, CIF/CSV/extxyz files, CDVAE-format .pt, ragged batches.

Everything that reads crystals from disk goes through :func:`read_structures`, which yields one
:class:`Record` per input crystal (an id, the structure or the reason it could not be read), so that one
bad row never stops a run and every skip can be reported.
"""

from __future__ import annotations

import math
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
    "read_csv_table",
    "write_cif",
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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_str(text, fmt="cif")
    except Exception as err:  # noqa: BLE001 - pymatgen raises many types
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StructureReadError(f"{where}: unreadable CIF ({msg[:200]})") from None
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


def _csv_records(path: Path, limit: int | None, id_column: str) -> Iterator[Record]:
    df = read_csv_table(path)
    ids = df[id_column].astype(str).tolist() if id_column in df.columns else [str(i) for i in range(len(df))]
    n = len(df) if limit is None else min(limit, len(df))
    for row in range(n):
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


def _cif_folder_records(path: Path, limit: int | None) -> Iterator[Record]:
    files = sorted(path.glob("*.cif"))
    if not files:
        raise ValueError(f"{path}: the folder contains no .cif files")
    for f in files[:limit]:
        try:
            if f.stat().st_size > MAX_CIF_BYTES:
                raise StructureReadError(
                    f"{f.name}: {f.stat().st_size} bytes exceeds the limit of {MAX_CIF_BYTES}"
                )
            yield Record(f.stem, parse_cif(f.read_text(errors="replace"), where=f.name))
        except StructureReadError as err:
            yield Record(f.stem, None, str(err))


def _extxyz_records(path: Path, limit: int | None) -> Iterator[Record]:
    from ase.io import iread
    from pymatgen.io.ase import AseAtomsAdaptor

    try:
        frames = iread(str(path), index=":" if limit is None else f":{limit}", format="extxyz")
        for k, atoms in enumerate(frames):
            where = f"{path.name} frame {k}"
            try:
                if not all(atoms.pbc):
                    raise StructureReadError(
                        f"{where}: not periodic in all three directions (pbc={list(atoms.pbc)})"
                    )
                s = AseAtomsAdaptor.get_structure(atoms)
                yield Record(str(atoms.info.get("material_id", k)), _check_structure(s, where))
            except StructureReadError as err:
                yield Record(str(k), None, str(err))
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path}: unreadable extxyz file ({err})") from None


def _pt_records(path: Path, limit: int | None) -> Iterator[Record]:
    for k, s in enumerate(load_cdvae_pt(path)[:limit]):
        if isinstance(s, Structure):
            yield Record(str(k), s)
        else:
            yield Record(str(k), None, f"{path.name} crystal {k}: {s}")


def read_structures(
    path: str | os.PathLike, *, limit: int | None = None, id_column: str = "material_id"
) -> Iterator[Record]:
    """Yield a :class:`Record` for every crystal in ``path``.

    ``path`` may be a CSV(.gz) with a ``cif`` column (ids from ``id_column`` when present, else the row
    number), a folder of ``*.cif`` files (ids = file stems), a single ``.cif``, an extxyz file, or a
    CDVAE-format ``.pt`` (eval_gen.pt / eval_recon.pt; ids = index).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    name = path.name.lower()
    if path.is_dir():
        yield from _cif_folder_records(path, limit)
    elif name.endswith((".csv", ".csv.gz")):
        yield from _csv_records(path, limit, id_column)
    elif name.endswith(".cif"):
        try:
            yield Record(path.stem, parse_cif(path.read_text(errors="replace"), where=path.name))
        except StructureReadError as err:
            yield Record(path.stem, None, str(err))
    elif name.endswith((".extxyz", ".xyz")):
        yield from _extxyz_records(path, limit)
    elif name.endswith(".pt"):
        yield from _pt_records(path, limit)
    else:
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
# (degrees), num_atoms [E, B].
# ------------------------------------------------------------------------------------------------
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
    zero lattice lengths, which CDVAE's evaluator counts as invalid, keeping indices aligned.
    """
    frac, types, lengths, angles, counts = [], [], [], [], []
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
        "lengths": torch.tensor(lengths, dtype=torch.float32)[None],
        "angles": torch.tensor(angles, dtype=torch.float32)[None],
        "num_atoms": torch.tensor(counts, dtype=torch.int64)[None],
    }
    out.update(extra)
    atomic_torch_save(out, path)


def load_cdvae_pt(path: str | os.PathLike, *, eval_index: int = 0) -> list[Structure | str]:
    """Read the crystals of a CDVAE-format .pt (one entry per crystal: a Structure, or why it failed).

    Loaded with ``weights_only=True``; files whose extra entries hold pickled objects (CDVAE writes an
    argparse.Namespace and a torch_geometric batch) are read with only argparse.Namespace allowed.
    """
    import argparse

    path = Path(path)
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = safe_torch_load(path, what="CDVAE-format file")
    need = ("frac_coords", "atom_types", "lengths", "angles", "num_atoms")
    if not isinstance(data, dict) or any(k not in data for k in need):
        have = list(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: not a CDVAE-format file; expected keys {list(need)}, found {have}")

    # CDVAE files carry a leading num_evals dimension; accept files without it too.
    has_eval_dim = torch.as_tensor(data["num_atoms"]).dim() == 2
    frac, types, lengths, angles, counts = (
        torch.as_tensor(data[k])[eval_index] if has_eval_dim else torch.as_tensor(data[k]) for k in need
    )
    out: list[Structure | str] = []
    start = 0
    for b, n in enumerate(counts.tolist()):
        sl = slice(start, start + n)
        start += n
        try:
            if not all(math.isfinite(v) and v > 0 for v in lengths[b].tolist()):
                raise ValueError(f"lattice lengths {lengths[b].tolist()} are not positive")
            out.append(
                structure_from_arrays(
                    frac[sl].numpy(), types[sl].numpy(), lengths[b].numpy(), angles[b].numpy()
                )
            )
        except Exception as err:  # noqa: BLE001
            out.append(f"invalid crystal ({err})")
    return out


def records_to_list(records: Iterable[Record]) -> tuple[list[Record], list[Record]]:
    """Split records into (readable, failed)."""
    ok, bad = [], []
    for r in records:
        (ok if r.structure is not None else bad).append(r)
    return ok, bad
