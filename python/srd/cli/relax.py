"""srd-relax: relax crystals with CHGNet (FIRE) and write the relaxed CIFs, energies and trajectories.

srd-relax IN -o OUT [--fmax 0.1] [--steps 500] [--device cpu]
"""

from __future__ import annotations

import argparse
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

from ._common import HelpFormatter, add_quiet_arg, check_output_dir, positive_int, run

__all__ = ["main", "entry", "build_parser"]

DESCRIPTION = """\
Relax crystals with the pretrained CHGNet potential (CHGNet's StructOptimizer: ASE FIRE, positions and
cell, FrechetCellFilter) until every force is below --fmax eV/A or --steps steps were taken. Needs CHGNet:
pip install "srd[sun]".

IN is a folder with a cifs/ subfolder, a folder of .cif files, a CSV(.gz) with a 'cif' column, or a
CDVAE-format .pt. Writes, per crystal, OUT/cifs/<id>.cif (the relaxed crystal), OUT/trajectories/<id>.extxyz
(every step: cell, positions, total energy) and OUT/results/<id>.json; then OUT/energies.csv (energy per
atom before and after, steps, converged, failure reason). Every file is written atomically and a crystal
whose result exists is skipped: an interrupted run (Ctrl-C, SIGTERM) resumes where it stopped. A crystal
that cannot be read or relaxed is recorded with the reason; the run goes on."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="srd-relax", description=DESCRIPTION, formatter_class=HelpFormatter)
    p.add_argument("input", metavar="IN", help="crystals: folder (with cifs/ or *.cif), CSV(.gz) with a 'cif' "
                   "column, or CDVAE-format .pt")  # fmt: skip
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder (created; reruns resume)")
    p.add_argument("--fmax", type=float, default=0.1, help="stop when every force is below this (eV/A)")
    p.add_argument("--steps", type=positive_int, default=500,
                   help="at most this many FIRE steps per crystal (unconverged ones are kept, flagged)")  # fmt: skip
    p.add_argument("--fixed-cell", action="store_true", help="relax the positions only, not the cell")
    p.add_argument("--device", default="cpu", help="CHGNet device: cpu, cuda, cuda:N or auto")
    p.add_argument("--no-trajectories", action="store_true", help="do not write the extxyz trajectories")
    add_quiet_arg(p)
    return p


def _extxyz(structure, trajectory) -> str:
    """The trajectory as extxyz text (one frame per recorded step, total energy in eV)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    numbers = [site.specie.Z for site in structure]
    frames = []
    for cell, pos, energy in trajectory:
        a = Atoms(numbers=numbers, positions=pos, cell=cell, pbc=True)
        a.calc = SinglePointCalculator(a, energy=energy)
        frames.append(a)
    buf = io.StringIO()
    write(buf, frames, format="extxyz")
    return buf.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    """Run srd-relax with ``argv`` (default: sys.argv[1:]); returns the exit status."""
    args = build_parser().parse_args(argv)
    import pandas as pd

    from ..metrics import resolve_input, sun
    from ..structures import cif_file_names, write_cif
    from ..utils import atomic_write_text, resolve_device

    inp = Path(args.input)
    if not inp.exists():
        raise FileNotFoundError(f"IN not found: {inp}")
    if not args.fmax > 0:
        raise ValueError(f"--fmax must be positive, got {args.fmax}")
    try:
        sun.require_chgnet()
    except sun.MissingDependencyError as err:
        raise ValueError(str(err)) from None
    device = str(resolve_device(args.device))
    out = check_output_dir(Path(args.out), flag="-o/--out")
    ids, structures, errors = sun.read_crystals(resolve_input(inp), what="IN")
    stems = [Path(n).stem for n in cif_file_names(ids)]
    results_dir = out / "results"
    todo = [i for i in range(len(ids)) if not (results_dir / f"{stems[i]}.json").is_file()]
    print(f"srd-relax: {len(ids)} crystals, {len(ids) - len(todo)} already done, {len(todo)} to relax")

    def save(k: int, r) -> None:
        i = todo[k]
        if r.structure is not None:
            write_cif(out / "cifs" / f"{stems[i]}.cif", r.structure)
            if r.trajectory and not args.no_trajectories:
                atomic_write_text(
                    out / "trajectories" / f"{stems[i]}.extxyz", _extxyz(r.structure, r.trajectory)
                )
        s = structures[i]
        row = {
            "id": ids[i],
            "file": f"{stems[i]}.cif" if r.structure is not None else "",
            "formula": "" if s is None else s.composition.reduced_formula,
            "n_atoms": 0 if s is None else len(s),
            "e_per_atom_initial": r.e_initial,
            "e_per_atom": r.e_final,
            "steps": r.n_steps,
            "converged": r.converged,
            "failure": errors[i] or r.error or "",
        }
        # the result file last: its presence means that the crystal is done
        atomic_write_text(results_dir / f"{stems[i]}.json", json.dumps(row, default=str) + "\n")

    try:
        sun.relax([structures[i] for i in todo], fmax=args.fmax, steps=args.steps, relax_cell=not args.fixed_cell,
                  device=device, keep_trajectory=not args.no_trajectories, show_progress=not args.quiet,
                  on_result=save)  # fmt: skip
    finally:
        rows = []
        for stem in stems:
            f = results_dir / f"{stem}.json"
            if f.is_file():
                d = json.loads(f.read_text())
                for k in ("e_per_atom_initial", "e_per_atom"):
                    d[k] = float(d[k])
                rows.append(d)
        if rows:
            atomic_write_text(out / "energies.csv", pd.DataFrame(rows).to_csv(index=False))
    n_failed = sum(bool(r["failure"]) for r in rows)
    n_conv = sum(bool(r["converged"]) for r in rows)
    de = [r["e_per_atom"] - r["e_per_atom_initial"] for r in rows if math.isfinite(r["e_per_atom"])]
    mean_de = f"{sum(de) / len(de):+.4f}" if de else "—"
    print(
        f"  relaxed {len(rows) - n_failed}, converged {n_conv}, failed {n_failed}; mean change {mean_de} eV/atom"
    )
    print(
        f"wrote {out / 'cifs'}, {out / 'energies.csv'}"
        + ("" if args.no_trajectories else " and trajectories")
    )
    return 0


def entry() -> None:
    """Console-script entry point."""
    run(main, "srd-relax")


if __name__ == "__main__":  # pragma: no cover
    entry()
