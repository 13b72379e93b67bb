"""srd-train on bad inputs and bad events: NaN in the data, corrupted files, a diverging loss, SIGTERM.

* non-finite training vectors are refused at load, naming the rows (index, id) and blocks;
* feature files and checkpoints carry a checksum: corrupted bytes are reported and never used;
* a loss (or weights) that becomes non-finite stops srd-train with exit 1, keeping the last good checkpoint;
* SIGTERM finishes the step, checkpoints and exits 143; --resume then ends with the weights of an
  uninterrupted run, bit for bit;
* a finished run resumed reports its real last loss; stale temporary files of RUN are removed.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

import srd.representation
from helpers import read_log as rows
from helpers import synthetic_features, tiny_config
from srd.cli._common import Terminated
from srd.cli.train import main
from srd.diffusion import load_checkpoint, sample_representations
from srd.diffusion.gaussian import GaussianDiffusion
from srd.diffusion.trainer import TrainingDiverged, train
from srd.representation import Features

pytestmark = pytest.mark.usefixtures("one_thread")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SRD_PROGRESS": "0"}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m srd.cli.train ARGS`` in a subprocess (the real entry point: exit codes, signals)."""
    return subprocess.run(
        [sys.executable, "-m", "srd.cli.train", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_args(feats: Path, toml: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(feats), "--out", str(out), "--config", str(toml), "--no-progress", *extra]


def nan_features() -> Features:
    """16 synthetic vectors; 10 rows hold NaN / inf: row 3 in d_min, row 5 in ead_max and composition,
    rows 8..15 in the size entry."""
    f = synthetic_features(16)
    lay = f.layout
    f.R[3, lay.dmin] = math.nan
    f.R[5, 2] = math.inf
    f.R[5, lay.composition.start + 43] = math.nan
    f.R[8:, lay.size] = math.nan
    return f


def flip_byte_in_largest_tensor(path: Path) -> None:
    """Flip one byte in the middle of the largest tensor record of a torch.save zip file (in place)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    assert info.compress_type == zipfile.ZIP_STORED and info.file_size > 64
    b = bytearray(path.read_bytes())
    off = info.header_offset
    n_name, n_extra = struct.unpack("<HH", b[off + 26 : off + 30])
    start = off + 30 + n_name + n_extra
    b[start + info.file_size // 2] ^= 0x5A
    path.write_bytes(bytes(b))


def tmp_files(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------------------
# Non-finite training data
# ------------------------------------------------------------------------------------------------
def test_nan_in_features_is_refused_at_load_naming_rows_and_blocks(tmp_path):
    path = tmp_path / "nan.pt"
    nan_features().save(path)
    with pytest.raises(ValueError) as exc:
        Features.load(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: R holds non-finite values (NaN or inf) in 10 of 16 rows: ")
    assert "row 3 (id 'x3'): NaN in block dmin (column 600)" in msg
    assert "row 5 (id 'x5'): NaN/inf in block ead_max, composition (columns 2, 650)" in msg
    assert "row 8 (id 'x8'): NaN in block size (column 703)" in msg
    assert "... and 5 more" in msg and "row 11 " not in msg  # the first five rows, then a count
    # a file of an older srd (no checksum) is refused all the same
    torch.save(nan_features().to_dict(), path)
    with pytest.raises(ValueError, match=r"10 of 16 rows: row 3 \(id 'x3'\)"):
        Features.load(path)
    # non-finite scaling statistics are refused too
    f = synthetic_features(4)
    f.stats.lo[f.layout.lattice.start] = math.inf
    f.save(path)
    with pytest.raises(
        ValueError, match=r"scaling statistics \(lo\) hold non-finite values in block lattice"
    ):
        Features.load(path)


def test_cli_refuses_nan_features_with_exit_2(tmp_path, tiny_toml):
    feats = tmp_path / "nan.pt"
    nan_features().save(feats)
    run = tmp_path / "run"
    proc = cli(*train_args(feats, tiny_toml, run, "--max-steps", "3"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("srd-train: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert f"{feats}: R holds non-finite values" in errors[0]
    assert "row 3 (id 'x3'): NaN in block dmin" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (run / "checkpoint.pt").exists()


def test_featurised_csv_with_nan_is_refused(tmp_path, tiny_toml, monkeypatch):
    csv = tmp_path / "crystals.csv"
    csv.write_text("material_id,cif\n")
    monkeypatch.setattr(srd.representation, "featurize", lambda *a, **k: nan_features())
    with pytest.raises(
        ValueError, match=r"crystals\.csv \(featurised\): R holds non-finite .* row 3 \(id 'x3'\)"
    ):
        main(train_args(csv, tiny_toml, tmp_path / "run", "--dataset", "perov_5", "--max-steps", "2"))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# ------------------------------------------------------------------------------------------------
# Checksums
# ------------------------------------------------------------------------------------------------
def test_corrupted_feature_file_is_refused(tmp_path):
    good = synthetic_features(16)
    path = tmp_path / "train.pt"
    good.save(path)
    assert torch.equal(Features.load(path).R, good.R)
    # one value changed, the stored checksum left as it was
    d = torch.load(path, weights_only=True)
    assert d["checksum"].startswith("sha256:")
    d["R"][4, 100] += 0.25
    torch.save(d, path)
    with pytest.raises(ValueError, match=r"checksum mismatch: the file is corrupted"):
        Features.load(path)
    # a non-tensor value changed
    good.save(path)
    d = torch.load(path, weights_only=True)
    d["ids"][0] = "y0"
    torch.save(d, path)
    with pytest.raises(ValueError, match=r"checksum mismatch"):
        Features.load(path)
    # flipped bytes in the file itself
    good.save(path)
    flip_byte_in_largest_tensor(path)
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(path))}: checksum mismatch: the file is corrupted"
    ):
        Features.load(path)
    # a file written before srd stored checksums still loads
    torch.save(good.to_dict(), path)
    assert torch.equal(Features.load(path).R, good.R)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ckpt") / "run"
    train(
        tiny_config(max_steps=4, mlp={"hidden": 32, "depth": 1}),
        synthetic_features(16),
        run,
        show_progress=False,
    )
    return run


def test_corrupted_checkpoint_is_refused(tmp_path, small_run):
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    ck_path = run / "checkpoint.pt"
    original = ck_path.read_bytes()
    load_checkpoint(run)  # the intact file loads
    # one weight changed, the stored checksum left as it was
    ck = torch.load(ck_path, weights_only=True)
    name = next(iter(ck["model"]))
    ck["model"][name].view(-1)[0] += 1.0
    torch.save(ck, ck_path)
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(ck_path))}: checksum mismatch: the file is corrupted"
    ):
        load_checkpoint(run)
    with pytest.raises(ValueError, match="checksum mismatch"):
        sample_representations(run, 2, progress=False)
    cfg = tiny_config(max_steps=6, mlp={"hidden": 32, "depth": 1})
    with pytest.raises(ValueError, match="checksum mismatch"):  # --resume (check_run_dir) refuses it too
        train(cfg, synthetic_features(16), run, resume=True, show_progress=False)
    # flipped bytes in the file
    ck_path.write_bytes(original)
    flip_byte_in_largest_tensor(ck_path)
    with pytest.raises(ValueError, match="checksum mismatch: the file is corrupted"):
        load_checkpoint(run)
    # a checkpoint written before srd stored checksums loads; with a NaN weight it is refused
    ck_path.write_bytes(original)
    ck = torch.load(ck_path, weights_only=True)
    del ck["checksum"]
    torch.save(ck, ck_path)
    assert load_checkpoint(run)[1]["step"] == 4
    ck["model"][name].view(-1)[0] = math.nan
    torch.save(ck, ck_path)
    with pytest.raises(
        ValueError, match=rf"the model weights are not finite \(NaN or inf in {re.escape(name)}\)"
    ):
        load_checkpoint(run)


# ------------------------------------------------------------------------------------------------
# A diverging run
# ------------------------------------------------------------------------------------------------
def _poison_loss_at(monkeypatch, k: int) -> None:
    """Make the diffusion loss of the k-th training step NaN."""
    calls = {"n": 0}
    loss = GaussianDiffusion.loss

    def poisoned(self, *args, **kw):
        out = loss(self, *args, **kw)
        if self.training:
            calls["n"] += 1
            if calls["n"] == k:
                return out * math.nan
        return out

    monkeypatch.setattr(GaussianDiffusion, "loss", poisoned)


def test_nan_loss_stops_with_exit_1_and_keeps_last_good_checkpoint(
    tmp_path, feats_file, tiny_toml, monkeypatch, capsys
):
    run = tmp_path / "run"
    _poison_loss_at(monkeypatch, 13)
    assert main(train_args(feats_file, tiny_toml, run, "--max-steps", "20", "--checkpoint-every", "5")) == 1
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert errors == [
        "srd-train: error: training diverged: the loss became non-finite (nan) at step 13 (epoch 3); the step "
        "was not taken and this state was not saved. The last good checkpoint, "
        f"{run / 'checkpoint.pt'} (step 10), was kept; train again (in a new --out) with a lower --lr or "
        "grad_clip > 0"
    ]
    diffusion, meta = load_checkpoint(run)
    assert meta["step"] == 10
    assert [r["step"] for r in rows(run)] == [str(s) for s in range(1, 13)]
    assert all(math.isfinite(float(r["loss"])) for r in rows(run))
    assert tmp_files(run) == []
    # the kept checkpoint is the one of a clean 10-step run
    monkeypatch.undo()
    clean = tmp_path / "clean"
    assert main(train_args(feats_file, tiny_toml, clean, "--max-steps", "10")) == 0
    ref = torch.load(clean / "checkpoint.pt", weights_only=True)["model"]
    got = diffusion.model.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)


def test_nan_weights_are_never_checkpointed(tmp_path, feats_file, tiny_toml, monkeypatch, capsys):
    """A finite loss with non-finite gradients (e.g. an overflow) poisons the weights: the next checkpoint
    refuses to save them."""
    calls = {"n": 0}
    clip = torch.nn.utils.clip_grad_norm_

    def poisoned_clip(params, *args, **kw):
        params = list(params)
        calls["n"] += 1
        if calls["n"] == 10:
            for p in params:
                p.grad.fill_(math.inf)
        return clip(params, *args, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", poisoned_clip)
    run = tmp_path / "run"
    assert main(train_args(feats_file, tiny_toml, run, "--max-steps", "20", "--checkpoint-every", "5")) == 1
    err = capsys.readouterr().err
    assert "srd-train: error: training diverged: the model weights became non-finite" in err
    assert "by step 10; this state was not saved" in err and "(step 5), was kept" in err
    assert load_checkpoint(run)[1]["step"] == 5


def test_train_api_raises_training_diverged(tmp_path, monkeypatch):
    _poison_loss_at(monkeypatch, 2)
    cfg = tiny_config(max_steps=5, mlp={"hidden": 32, "depth": 1})
    with pytest.raises(TrainingDiverged, match=r"at step 2 .*No checkpoint had been written yet"):
        train(cfg, synthetic_features(16), tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# ------------------------------------------------------------------------------------------------
# Signals, resume, stale temporary files
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig, exc", [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_signal_finishes_the_step_checkpoints_and_restores_handlers(tmp_path, monkeypatch, sig, exc):
    """The signal arrives during step 7: the step is finished, checkpointed, then Terminated (SIGTERM) or a
    plain KeyboardInterrupt (SIGINT) is raised, and the handlers in place before are restored."""
    seen = []
    guard = seen.append  # were the trainer's handler missing, this would catch the signal (not kill pytest)
    old = {s: signal.signal(s, lambda signum, frame: guard(signum)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        before = {s: signal.getsignal(s) for s in old}
        calls = {"n": 0}
        loss = GaussianDiffusion.loss

        def signalling(self, *args, **kw):
            calls["n"] += 1
            if calls["n"] == 7:
                os.kill(os.getpid(), sig)
            return loss(self, *args, **kw)

        monkeypatch.setattr(GaussianDiffusion, "loss", signalling)
        run = tmp_path / "run"
        with pytest.raises(exc) as info:
            train(
                tiny_config(max_steps=50, mlp={"hidden": 32, "depth": 1}),
                synthetic_features(16),
                run,
                show_progress=False,
            )
        assert isinstance(info.value, Terminated) == (sig == signal.SIGTERM)
        assert seen == []
        assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 7
        assert {s: signal.getsignal(s) for s in old} == before
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_resuming_a_finished_run_reports_the_last_loss(tmp_path, feats_file, tiny_toml, capsys):
    run = tmp_path / "run"
    args = train_args(feats_file, tiny_toml, run, "--max-steps", "4")
    assert main(args) == 0
    last = float(rows(run)[-1]["loss"])
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"srd-train: 4 steps, last loss {last:.5f}," in err and "last loss nan" not in err
    # a checkpoint of an older srd (no last_loss, no checksum): the loss is read from log.csv
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["last_loss"] == pytest.approx(last, rel=1e-6)
    del ck["last_loss"], ck["checksum"]
    torch.save(ck, run / "checkpoint.pt")
    assert main([*args, "--resume"]) == 0
    assert f"srd-train: 4 steps, last loss {last:.5f}," in capsys.readouterr().err


def test_stale_temporary_files_are_removed(tmp_path, feats_file, tiny_toml, capsys):
    run = tmp_path / "run"
    run.mkdir()
    stale = [".checkpoint.pt.k2x_9abc.tmp", ".log.csv.0a1b2c3d.tmp", ".config.json.zz99yy88.tmp"]
    kept = [".notes.txt.abcd1234.tmp", "checkpoint.pt.tmp", ".checkpoint.pt.tmp", "mine.tmp"]
    for name in stale + kept:
        (run / name).write_bytes(b"partial")
    args = train_args(feats_file, tiny_toml, run, "--max-steps", "2")
    assert main(args) == 0  # a fresh run in a folder with leftovers
    assert tmp_files(run) == sorted(kept)
    assert (
        f"removed {run / stale[0]}, a temporary file left by an interrupted save" in capsys.readouterr().err
    )
    (run / ".checkpoint.pt.q1w2e3r4.tmp").write_bytes(b"partial")  # e.g. SIGKILL during a save
    assert main([*args, "--resume"]) == 0
    assert tmp_files(run) == sorted(kept)


def test_sigterm_mid_run_then_resume_equals_uninterrupted_run(tmp_path, feats_file, tiny_toml):
    """Fault injection: SIGTERM a real srd-train process mid-run, check exit 143 and its checkpoint, resume
    to the end, and compare every weight with an uninterrupted run of the same seed."""
    steps, signal_after = 300, 40
    extra = ("--max-steps", str(steps), "--checkpoint-every", "25", "--seed", "3")
    part = tmp_path / "part"
    err_file = tmp_path / "part.err"
    with err_file.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "srd.cli.train", *train_args(feats_file, tiny_toml, part, *extra)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + 90
            while proc.poll() is None and time.monotonic() < deadline:
                if (part / "log.csv").is_file() and len(rows(part)) >= signal_after:
                    break
                time.sleep(0.005)
            assert proc.poll() is None, f"srd-train ended before the signal: {err_file.read_text()[-2000:]}"
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = err_file.read_text()
    assert rc == 143, stderr[-2000:]
    assert "srd-train: terminated (SIGTERM)" in stderr and "Traceback" not in stderr
    ck = torch.load(part / "checkpoint.pt", weights_only=True)
    cut = ck["step"]
    assert signal_after <= cut < steps
    assert [r["step"] for r in rows(part)] == [str(s) for s in range(1, cut + 1)]
    assert tmp_files(part) == []

    resumed = cli(*train_args(feats_file, tiny_toml, part, *extra, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {part} from step {cut}" in resumed.stderr

    full = tmp_path / "full"
    assert main(train_args(feats_file, tiny_toml, full, *extra)) == 0
    a = torch.load(full / "checkpoint.pt", weights_only=True)
    b = torch.load(part / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == steps
    for part_name in ("model", "ema"):
        sa = a[part_name] if part_name == "model" else a["ema"]["shadow"]
        sb = b[part_name] if part_name == "model" else b["ema"]["shadow"]
        assert sa.keys() == sb.keys() and len(sa) > 0
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (part_name, k)
    assert [r["loss"] for r in rows(full)] == [r["loss"] for r in rows(part)]
