"""srd-train: flags, config files (packaged by name, or a path), run-folder protection, resume, CSV input,
and torchrun on 2 CPU processes."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import ROOT
from helpers import read_log as rows
from srd.cli.train import build_parser, main, resolve_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--data",
        "--out",
        "--config",
        "--epochs",
        "--max-steps",
        "--batch-size",
        "--lr",
        "--seed",
        "--device",
        "--resume",
        "--checkpoint-every",
        "--model",
        "--dataset",
        "--n-max",
        "--max-minutes",
    ):
        assert flag in out
    assert "(default: None)" not in out
    for action in build_parser()._actions:
        assert action.help, action.option_strings


def test_packaged_configs_by_name(tmp_path, feats_file, tiny_toml, capsys):
    from srd.diffusion.config import CONFIGS_DIR, TrainConfig, config_path, load_toml, packaged_configs

    configs = packaged_configs()
    assert {"small", "perov_5", "carbon_24", "mp_20", "perov_5_cpu", "carbon_24_cpu"} <= set(configs)
    assert all(configs.values())  # a one-line description each (the file's first comment line)
    assert CONFIGS_DIR.parent.name == "srd" and CONFIGS_DIR.parent.joinpath("__init__.py").is_file()
    for name in configs:  # every packaged config is valid
        TrainConfig.from_dict(load_toml(config_path(name)), where=name)
    assert config_path("small") == config_path("small.toml") == CONFIGS_DIR / "small.toml"
    assert config_path(tiny_toml) == tiny_toml  # a path is still a path
    base = ["--data", str(feats_file), "--out", str(tmp_path / "r")]
    cfg = resolve_config(build_parser().parse_args([*base, "--config", "perov_5_cpu", "--lr", "0.01"]))
    assert cfg.model == "transformer" and cfg.max_steps == 12000 and cfg.lr == 0.01
    with pytest.raises(FileNotFoundError, match=r"'nope'.*packaged: carbon_24, .*small"):
        main([*base, "--config", "nope"])
    with pytest.raises(FileNotFoundError, match=r"'configs/small.toml': no such file"):
        main([*base, "--config", "configs/small.toml"])
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "packaged configs" in out and all(f"  {name} " in out for name in configs)
    # a packaged config by name trains (its sizes, a few tiny steps)
    run = tmp_path / "run"
    args = ["--config", "small", "--max-steps", "1", "--batch-size", "8", "--device", "cpu", "--no-progress"]
    assert main(["--data", str(feats_file), "--out", str(run), *args]) == 0
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["config"]["model"] == "transformer" and ck["config"]["transformer"]["d_model"] == 128


def test_trains_a_few_steps_and_writes_run(tmp_path, feats_file, tiny_toml, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "--data",
                str(feats_file),
                "--out",
                str(run),
                "--config",
                str(tiny_toml),
                "--max-steps",
                "6",
                "--checkpoint-every",
                "3",
                "--lr",
                "2e-3",
                "--no-progress",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "srd-train config:" in err and '"lr": 0.002' in err  # flags override the config file
    assert (run / "checkpoint.pt").is_file() and (run / "config.json").is_file()
    assert (run / "loss.png").stat().st_size > 1000  # the loss curve
    log = rows(run)
    assert [r["step"] for r in log] == [str(i) for i in range(1, 7)]
    assert set(log[0]) == {"step", "epoch", "loss", "lr", "seconds"}
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 6 and ck["config"]["model"] == "mlp" and ck["config"]["mlp"]["hidden"] == 32
    assert ck["config"]["lr"] == 2e-3 and ck["config"]["diffusion"]["timesteps"] == 50
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"] == ck["config"]


def test_existing_run_needs_resume(tmp_path, feats_file, tiny_toml):
    run = tmp_path / "run"
    base = ["--data", str(feats_file), "--out", str(run), "--config", str(tiny_toml), "--no-progress"]
    assert main([*base, "--max-steps", "4"]) == 0
    with pytest.raises(FileExistsError, match="different config"):
        main([*base, "--max-steps", "4", "--lr", "0.5"])
    with pytest.raises(FileExistsError, match="pass --resume"):
        main([*base, "--max-steps", "4"])
    with pytest.raises(ValueError, match="different config"):
        main([*base, "--max-steps", "8", "--model", "transformer", "--resume"])
    assert main([*base, "--max-steps", "8", "--resume"]) == 0
    assert [r["step"] for r in rows(run)] == [str(i) for i in range(1, 9)]


def test_model_flag_and_epochs(tmp_path, feats_file, tiny_toml):
    run = tmp_path / "run"
    assert (
        main(
            [
                "--data",
                str(feats_file),
                "--out",
                str(run),
                "--config",
                str(tiny_toml),
                "--model",
                "transformer",
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--no-progress",
            ]
        )
        == 0
    )
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["model_spec"]["name"] == "transformer" and ck["step"] == 2 and ck["epoch"] == 1


def test_bad_inputs(tmp_path, feats_file, tiny_toml):
    with pytest.raises(FileNotFoundError, match="training file not found"):
        main(["--data", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "r1"), "--config", str(tiny_toml)])
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 1\n")
    with pytest.raises(ValueError, match="unknown key"):
        main(["--data", str(feats_file), "--out", str(tmp_path / "r2"), "--config", str(bad)])
    with pytest.raises(ValueError, match="n_max"):
        main(
            [
                "--data",
                str(feats_file),
                "--out",
                str(tmp_path / "r3"),
                "--config",
                str(tiny_toml),
                "--n-max",
                "7",
            ]
        )
    with pytest.raises(SystemExit):
        main(["--data", str(feats_file), "--out", str(tmp_path / "r4"), "--epochs", "1", "--max-steps", "2"])


def test_csv_input_is_featurized(tmp_path, tiny_toml, monkeypatch):
    """A CDVAE CSV is featurised (dataset from the path, or --dataset), cached, and trained on."""
    monkeypatch.setenv("SRD_CACHE_DIR", str(tmp_path / "cache"))
    with gzip.open(ROOT / "data" / "perov_5" / "val.csv.gz", "rt", newline="") as f:
        reader = csv.reader(f)
        head = [row for _, row in zip(range(13), reader)]  # header + 12 crystals (cif fields span lines)
    buf = io.StringIO()
    csv.writer(buf).writerows(head)
    body = buf.getvalue()
    anon = tmp_path / "crystals.csv"
    anon.write_text(body)
    # Without --dataset, n_max is inferred from the input (its largest crystal) and the dataset is unknown.
    r0 = tmp_path / "r0"
    assert (
        main(["--data", str(anon), "--out", str(r0), "--config", str(tiny_toml), "--max-steps", "1", "-q"])
        == 0
    )
    ck0 = torch.load(r0 / "checkpoint.pt", weights_only=True)
    assert ck0["n_max"] == 5 and not ck0["dataset"]
    run = tmp_path / "run"
    assert (
        main(
            [
                "--data",
                str(anon),
                "--dataset",
                "perov_5",
                "--out",
                str(run),
                "--config",
                str(tiny_toml),
                "--max-steps",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["n_max"] == 5 and ck["dataset"] == "perov_5" and ck["data"]["n"] == 12
    assert any((tmp_path / "cache").iterdir())


def test_torchrun_two_cpu_processes(tmp_path, feats_file, tiny_toml):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SRD_PROGRESS": "0"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "srd.cli.train",
        "--data",
        str(feats_file),
        "--out",
        str(run),
        "--config",
        str(tiny_toml),
        "--max-steps",
        "6",
        "--checkpoint-every",
        "3",
        "--device",
        "cpu",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ck["world_size"] == 2 and ck["step"] == 6
    log = rows(run)
    assert [r["step"] for r in log] == [str(i) for i in range(1, 7)]
    assert all(float(r["loss"]) > 0 for r in log)
    # 32 vectors, global batch 8 = 2 ranks x 4: 4 steps per epoch
    assert (ck["epoch"], ck["batch_in_epoch"]) == (1, 2)
