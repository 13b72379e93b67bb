"""Bad crystals and bad output paths: every case gets a named error (or the correct result), the good
rows go on, and nothing already computed is lost.

Covers the reliability issue's cases on the structure side: tiny and degenerate cells (bounded cost),
coincident atoms (d_min = 0, refused with the pair), 0-atom CIFs, extxyz files with one bad frame, ids
that collide as file names, the match-rate denominator, "nothing usable" exit codes, output paths and
file modes, and SIGTERM of srd-reconstruct.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

import srd
from helpers import DATA, ROOT, run_cli
from srd.representation import decode, featurize, prepare_structure
from srd.structures import cif_file_names, read_structures

FAST = ["--trials", "2", "--hops", "2", "--steps", "15", "--quiet"]
PEROV_TEST = DATA / "perov_5" / "test.csv.gz"


def _cif(structure: Structure) -> str:
    return str(CifWriter(structure))


def _csv(path, rows: list[tuple[str, str]]):
    """A CDVAE-format CSV(.gz) of (material_id, cif) rows."""
    with gzip.open(path, "wt") as f:
        pd.DataFrame({"material_id": [r[0] for r in rows], "cif": [r[1] for r in rows]}).to_csv(
            f, index=False
        )
    return path


def _perov_rows(n: int) -> list[tuple[str, str]]:
    df = pd.read_csv(PEROV_TEST, nrows=n)
    return list(zip(df["material_id"].astype(str), df["cif"]))


def _one(lattice: Lattice, species, coords) -> Structure:
    return Structure(lattice, species, coords)


# ------------------------------------------------------------------------------------------------
# Tiny and degenerate cells: refused with the numbers, before any large allocation
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("a", [0.02, 0.05])
def test_tiny_cell_is_refused_by_the_op_before_allocating(a):
    pos = torch.zeros((1, 3), dtype=torch.float64)
    cell = (torch.eye(3, dtype=torch.float64) * a)[None]
    ptr = torch.tensor([0, 1])
    num = torch.tensor([11])
    t0 = time.perf_counter()
    # Python validation (every device) and the C++ guard (check=False skips the Python checks).
    with pytest.raises(
        ValueError, match=r"srd.ead_batch: cells\[0\] is too small or too flat .* plane spacings"
    ):
        srd.ead_batch(pos, num, cell, ptr)
    with pytest.raises(ValueError, match=r"srd.ead: cells\[0\] is too small or too flat .* limit is 4e\+06"):
        srd.ead_batch(pos, num, cell, ptr, check=False)
    with pytest.raises(ValueError, match=r"limit"):
        srd.ead_batch(pos.requires_grad_(), num, cell, ptr, check=False).sum().backward()
    assert time.perf_counter() - t0 < 30  # refused up front, not after minutes of enumeration


def test_nearest_pairs_of_a_tiny_cell_is_cheap_and_exact():
    # The nearest-pair search radius is the shortest cell vector: a tiny cell costs what a large one of
    # its shape costs, so it needs no bound (the descriptor's fixed 16 A reach does).
    pos = torch.zeros((1, 3), dtype=torch.float64)
    cell = (torch.eye(3, dtype=torch.float64) * 0.02)[None]
    t0 = time.perf_counter()
    assert float(srd.min_distance(pos, cell, torch.tensor([0, 1]))[0]) == pytest.approx(0.02)
    assert time.perf_counter() - t0 < 5


def test_ordinary_cells_pass_the_bound():
    # The bound must not refuse real crystals: a 20-atom MP-20 cell and a one-atom 2.3 A cell.
    from helpers import real_crystals

    for s in [*real_crystals("mp_20", 5), _one(Lattice.cubic(2.3), ["Cu"], [[0, 0, 0]])]:
        pos = torch.tensor(s.cart_coords)
        cell = torch.tensor(s.lattice.matrix)[None]
        ptr = torch.tensor([0, len(s)])
        assert torch.isfinite(srd.ead_batch(pos, torch.tensor(s.atomic_numbers), cell, ptr)).all()


@pytest.mark.parametrize(
    "lattice,fragment",
    [
        (Lattice.cubic(0.02), "volume per atom 8e-06 A^3"),
        (Lattice.cubic(0.05), "below the physical minimum of 1 A^3"),
        (Lattice.from_parameters(3, 3, 3, 1, 1, 1), "volume per atom 0.00712 A^3"),
        (
            Lattice([[0.3, 0, 0], [0, 8, 0], [0, 0, 8]]),
            "degenerate cell: the distance between opposite faces is 0.3 A",
        ),
    ],
)
def test_prepare_refuses_tiny_and_degenerate_cells(lattice, fragment):
    with pytest.raises(ValueError, match=r"^row-7: ") as err:
        prepare_structure(_one(lattice, ["Na"], [[0, 0, 0]]), n_max=5, where="row-7")
    assert fragment in str(err.value)


def test_featurize_skips_tiny_and_degenerate_cells_and_writes_the_good_rows(tmp_path, capsys):
    from srd.cli.featurize import main

    good = _perov_rows(3)
    bad = [
        ("tiny", _cif(_one(Lattice.cubic(0.02), ["Na"], [[0, 0, 0]]))),
        ("needle", _cif(_one(Lattice.from_parameters(3, 3, 3, 1, 1, 1), ["Na"], [[0, 0, 0]]))),
    ]
    path = _csv(tmp_path / "mixed.csv.gz", [good[0], bad[0], good[1], bad[1], good[2]])
    out = tmp_path / "f.pt"
    t0 = time.perf_counter()
    assert main([str(path), "-o", str(out), "--n-max", "5", "--quiet", "--no-cache", "--workers", "1"]) == 0
    assert time.perf_counter() - t0 < 60
    text = capsys.readouterr().out
    assert "3 featurised, 2 skipped" in text and "cell too small for its atoms: 2" in text
    data = torch.load(out, weights_only=True)
    assert data["ids"] == [g[0] for g in good]
    assert [s[0] for s in data["skipped"]] == ["tiny", "needle"]
    assert "volume per atom 8e-06" in data["skipped"][0][1]


def test_decode_rejects_generated_degenerate_lattices():
    feats = featurize(PEROV_TEST, limit=3, use_cache=False, show_progress=False, workers=1)
    R = feats.R.double().clone()
    lay = feats.layout
    raw = feats.stats.unscale(R)
    raw[0, lay.lattice] = torch.tensor([0.05, 0.05, 0.05, 1.5708, 1.5708, 1.5708], dtype=torch.float64)
    out = decode(feats.stats.scale(raw), feats.stats, feats.n_max)
    assert "volume per atom" in out[0].reason
    assert all(hasattr(d, "numbers") for d in out[1:])


# ------------------------------------------------------------------------------------------------
# Coincident and overlapping atoms
# ------------------------------------------------------------------------------------------------
def test_coincident_atoms_have_dmin_zero():
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    cell = (torch.eye(3, dtype=torch.float64) * 4.0)[None]
    d = srd.min_distance(pos, cell, torch.tensor([0, 3]))
    assert float(d[0]) == 0.0
    # Coincident through a lattice translation (4 A apart in a 4 A cell), in float32 too.
    pos2 = torch.tensor([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0]], dtype=torch.float32)
    assert float(srd.min_distance(pos2, cell.float(), torch.tensor([0, 2]))[0]) == 0.0
    # Distinct atoms are unaffected; a one-atom cell still gives its shortest lattice vector.
    assert float(srd.min_distance(pos[:1], cell, torch.tensor([0, 1]))[0]) == pytest.approx(4.0)


def test_prepare_refuses_coincident_and_overlapping_atoms():
    s = _one(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0, 0, 0]])
    with pytest.raises(
        ValueError, match=r"x1: coincident atoms: sites 0 \(Na\) and 1 \(Cl\) .* are 0 A apart"
    ):
        prepare_structure(s, n_max=5, where="x1")
    s = _one(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    with pytest.raises(ValueError, match=r"overlapping atoms: .* are 0.2 A apart \(minimum 0.5 A\)"):
        prepare_structure(s, n_max=5)


def test_coincident_atoms_in_a_cif_get_a_hint(tmp_path):
    text = _cif(_one(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]))
    text = text.replace("0.50000000  0.50000000  0.50000000", "0.00000000  0.00000000  0.00000000")
    (tmp_path / "c.cif").write_text(text)
    rec = next(read_structures(tmp_path / "c.cif"))
    # pymatgen merges the two sites into one of occupancy 2 and refuses the file ("no structures").
    assert rec.structure is None and "atoms that coincide" in rec.error


# ------------------------------------------------------------------------------------------------
# CIFs with no atoms; extxyz files with one bad frame
# ------------------------------------------------------------------------------------------------
def test_zero_atom_cif(tmp_path):
    text = (
        "data_empty\n_cell_length_a 4\n_cell_length_b 4\n_cell_length_c 4\n_cell_angle_alpha 90\n"
        "_cell_angle_beta 90\n_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 'P 1'\n"
    )
    (tmp_path / "empty.cif").write_text(text)
    rec = next(read_structures(tmp_path / "empty.cif"))
    assert rec.structure is None and "no atom sites" in rec.error and "0 atoms" in rec.error
    looped = (
        text + "loop_\n _atom_site_label\n _atom_site_type_symbol\n _atom_site_fract_x\n"
        " _atom_site_fract_y\n _atom_site_fract_z\n _atom_site_occupancy\n"
    )
    (tmp_path / "looped.cif").write_text(looped)
    rec = next(read_structures(tmp_path / "looped.cif"))
    assert rec.structure is None and "modulo" not in rec.error and "no" in rec.error


def _xyz_frame(structure: Structure, mid: str) -> str:
    import io

    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.info["material_id"] = mid
    buf = io.StringIO()
    write(buf, atoms, format="extxyz")
    return buf.getvalue()


def test_extxyz_bad_frames_do_not_reject_the_file(tmp_path):
    from helpers import real_crystals

    good = real_crystals("perov_5", 3)
    singular = _xyz_frame(good[0], "flat")
    # Replace the lattice by a singular one (two equal vectors).
    import re

    singular = re.sub(r'Lattice="[^"]*"', 'Lattice="4 0 0 4 0 0 0 0 4"', singular)
    text = _xyz_frame(good[0], "a") + singular + _xyz_frame(good[1], "b") + _xyz_frame(good[2], "c")
    truncated = text + '5\nLattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3 pbc="T T T"\nSr 0 0 0\n'
    path = tmp_path / "mixed.extxyz"
    path.write_text(truncated)
    recs = list(read_structures(path))
    assert [r.id for r in recs if r.structure is not None] == ["a", "b", "c"]
    bad = [r for r in recs if r.structure is None]
    assert len(bad) == 2
    assert "frame 1" in bad[0].error and ("singular" in bad[0].error or "unreadable" in bad[0].error)
    assert (
        "frame 4" in bad[1].error and "truncated: declares 5 atoms but the file ends after 1" in bad[1].error
    )


# ------------------------------------------------------------------------------------------------
# Ids that collide as file names
# ------------------------------------------------------------------------------------------------
def test_cif_file_names_are_safe_and_unique():
    names = cif_file_names(["x/y", "x_y", "x y", "X_Y", ".hidden", "", "a" * 300, "ok-1"])
    assert names[:4] == ["x_y.cif", "x_y~2.cif", "x_y~3.cif", "X_Y~4.cif"]
    assert names[4] == "_hidden.cif" and names[5] == "crystal.cif"
    assert len(names[6]) <= 130 and names[7] == "ok-1.cif"
    assert len({n.lower() for n in names}) == len(names)
    assert cif_file_names(["x_y", "x/y"]) == ["x_y.cif", "x_y~2.cif"]  # first come, plain name


def test_colliding_ids_keep_every_crystal_and_evaluate_agrees(tmp_path):
    from srd.cli.evaluate import main as evaluate
    from srd.cli.reconstruct import main as reconstruct

    rows = _perov_rows(3)
    ids = ["x/y", "x_y", "x y"]
    ref = _csv(tmp_path / "ref.csv.gz", [(i, cif) for i, (_, cif) in zip(ids, rows)])
    out = tmp_path / "out"
    assert reconstruct([str(ref), "-o", str(out), "--n-max", "5", *FAST]) == 0
    with open(out / "results.csv", newline="") as f:
        res = list(csv.DictReader(f))
    assert [r["id"] for r in res] == ids
    assert [r["file"] for r in res] == ["cifs/x_y.cif", "cifs/x_y~2.cif", "cifs/x_y~3.cif"]
    assert len(list((out / "cifs").glob("*.cif"))) == 3
    # eval_recon.pt holds three different crystals (their formulas are those of the three rows).
    recs = list(read_structures(out / "eval_recon.pt"))
    assert [r.structure.composition.reduced_formula for r in recs] == [r["formula"] for r in res]
    assert evaluate(["recon", str(out), "--reference", str(ref), "--workers", "1", "--quiet"]) == 0
    metrics = json.loads((out / "recon_metrics.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    n_matched = sum(r["matched"] == "1" for r in res)
    assert metrics["n_matched"] == n_matched
    assert metrics["match_rate"] == pytest.approx(summary["reconstruction"]["match_rate"])


# ------------------------------------------------------------------------------------------------
# Match rate over all input crystals; one exit code for "nothing usable"
# ------------------------------------------------------------------------------------------------
def test_match_rate_counts_unreadable_rows_as_misses(tmp_path, capsys):
    from srd.cli.reconstruct import main

    good = _perov_rows(4)
    rows = list(good) + [(f"bad-{k}", "data_x\nnot a cif") for k in range(9)]
    path = _csv(tmp_path / "mixed.csv.gz", rows)
    out = tmp_path / "out"
    assert main([str(path), "-o", str(out), "--n-max", "5", *FAST]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    rec = summary["reconstruction"]
    assert rec["n"] == 13
    n_matched = round(rec["match_rate"] * 13 / 100)
    assert n_matched <= 4
    assert "over all 13 input crystals (9 unreadable or not reconstructed count as misses)" in text
    assert f"match rate {100 * n_matched / 13:.2f} %" in text


def test_nothing_usable_exits_2_everywhere(tmp_path):
    path = _csv(tmp_path / "bad.csv.gz", [(f"bad-{k}", "data_x\nnot a cif") for k in range(3)])
    r = run_cli("srd.cli.reconstruct", str(path), "-o", str(tmp_path / "o"), "--n-max", "5", "--quiet")
    assert r.returncode == 2 and "srd-reconstruct: error: no usable crystal" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("srd.cli.featurize", str(path), "-o", str(tmp_path / "f.pt"), "--n-max", "5", "--quiet")
    assert r.returncode == 2 and "srd-featurize: error: featurize: no usable crystal" in r.stderr


# ------------------------------------------------------------------------------------------------
# Output paths and file modes
# ------------------------------------------------------------------------------------------------
def test_output_paths_are_checked_before_any_work(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    r = run_cli("srd.cli.reconstruct", str(PEROV_TEST), "-o", str(a_file), "--limit", "1", "--quiet")
    assert r.returncode == 2 and f"-o/--output {a_file}: exists and is not a folder" in r.stderr
    r = run_cli("srd.cli.reconstruct", str(PEROV_TEST), "-o", str(a_file / "sub"), "--limit", "1", "--quiet")
    assert r.returncode == 2 and "cannot create the folder" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("srd.cli.featurize", str(PEROV_TEST), "-o", str(tmp_path), "--limit", "1", "--quiet")
    assert r.returncode == 2 and "is a folder; expected a file name" in r.stderr
    r = run_cli("srd.cli.featurize", str(PEROV_TEST), "-o", str(a_file / "f.pt"), "--limit", "1", "--quiet")
    assert r.returncode == 2 and "its folder" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_unwritable_output_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = run_cli("srd.cli.reconstruct", str(PEROV_TEST), "-o", str(ro), "--limit", "1", "--quiet")
        assert r.returncode == 2 and "not writable" in r.stderr
    finally:
        ro.chmod(0o700)


def test_files_are_written_with_the_umask_mode(tmp_path):
    from srd.utils import FILE_MODE, atomic_write_text

    old = os.umask(0o022)
    os.umask(old)
    atomic_write_text(tmp_path / "x.txt", "x")
    mode = (tmp_path / "x.txt").stat().st_mode & 0o777
    assert mode == FILE_MODE == 0o666 & ~old
    assert mode != 0o600 or old == 0o177


# ------------------------------------------------------------------------------------------------
# SIGTERM of srd-reconstruct: finished batches are kept, exit 143, the rerun completes identically
# ------------------------------------------------------------------------------------------------
def test_sigterm_of_reconstruct_saves_and_resumes(tmp_path):
    args = [str(PEROV_TEST), "--limit", "6", "--batch-size", "1", "--seed", "3", *FAST]
    ref = tmp_path / "ref"
    r = run_cli("srd.cli.reconstruct", args[0], "-o", str(ref), *args[1:])
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    env = {**os.environ, "SRD_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "srd.cli.reconstruct", args[0], "-o", str(out), *args[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    part = out / "parts" / "rank0.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not part.is_file() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM); finished work was saved" in err
    assert not list(out.rglob("*.tmp"))
    done = len(list((out / "cifs").glob("*.cif")))
    assert 1 <= done < 6
    r = run_cli("srd.cli.reconstruct", args[0], "-o", str(out), *args[1:])
    assert r.returncode == 0, r.stderr
    for f in (ref / "cifs").glob("*.cif"):
        assert f.read_text() == (out / "cifs" / f.name).read_text()


def test_train_and_evaluate_check_their_output_paths(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    r = run_cli("srd.cli.train", "--data", str(PEROV_TEST), "--out", str(a_file / "run"), "--max-steps", "1")
    assert r.returncode == 2 and "--out" in r.stderr and "is not a folder" in r.stderr
    r = run_cli(
        "srd.cli.evaluate",
        "gen",
        str(PEROV_TEST),
        "--reference",
        str(PEROV_TEST),
        "-o",
        str(a_file),
        "--quiet",
    )
    assert r.returncode == 2 and f"-o/--out {a_file}: exists and is not a folder" in r.stderr
