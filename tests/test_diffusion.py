"""srd.diffusion: schedules, forward process, samplers, denoisers, training, checkpoints and exact resume."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import read_log, synthetic_features, tiny_config
from srd.descriptor.params import EADParams
from srd.diffusion import (
    EMA,
    GaussianDiffusion,
    MLPConfig,
    TrainConfig,
    TransformerConfig,
    UNet1DConfig,
    block_tokens,
    build_denoiser,
    cosine_betas,
    linear_betas,
    load_checkpoint,
    make_betas,
    respaced_timesteps,
    sample_representations,
    train,
)
from srd.diffusion.config import config_path, load_toml
from srd.representation import Features, Layout, ScalingStats

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------
# Schedules and the forward process
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cosine", "linear"])
@pytest.mark.parametrize("T", [10, 1000, 2000])
def test_schedule_identities(name, T):
    betas = make_betas(name, T)
    assert betas.dtype == torch.float64 and betas.shape == (T,)
    assert bool((betas > 0).all()) and bool((betas <= 0.999).all())
    abar = torch.cumprod(1 - betas, dim=0)
    assert bool((abar[1:] < abar[:-1]).all()), "alpha_bar must be strictly decreasing"
    assert 0 < float(abar[-1]) < float(abar[0]) < 1


def test_cosine_schedule_matches_closed_form():
    T, s = 2000, 0.008
    betas = cosine_betas(T)
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    abar = [x / f[0] for x in f]
    # Away from the clipped end, prod(1 - beta) reproduces alpha_bar(t) to float64 precision.
    got = torch.cumprod(1 - betas, dim=0)
    for t in (1, 10, 500, 1000, 1900):
        assert abs(float(got[t - 1]) - abar[t]) < 1e-12
    assert float(betas[-1]) == pytest.approx(0.999)  # the last beta is clipped
    assert float(betas.max()) <= 0.999


def test_linear_schedule_endpoints():
    b = linear_betas(1000)
    assert float(b[0]) == pytest.approx(1e-4) and float(b[-1]) == pytest.approx(0.02)
    assert float(linear_betas(2000)[-1]) == pytest.approx(0.01)


def test_buffers_float32_from_float64():
    d = GaussianDiffusion(torch.nn.Identity(), length=4, timesteps=2000)
    assert d.betas.dtype == torch.float32 and d.alphas_cumprod64.dtype == torch.float64
    exact = torch.cumprod(1 - cosine_betas(2000), dim=0)
    assert torch.equal(d.alphas_cumprod, exact.float())  # computed in float64, rounded once
    with pytest.raises(ValueError, match="unknown noise schedule"):
        make_betas("quadratic", 10)


@pytest.mark.parametrize("data_range", ["unit", "symmetric"])
def test_q_sample_statistics(data_range):
    d = GaussianDiffusion(torch.nn.Identity(), length=8, timesteps=1000, data_range=data_range)
    g = torch.Generator().manual_seed(0)
    x0 = torch.linspace(0, 1, 8).repeat(40000, 1)
    for t in (0, 300, 999):
        tt = torch.full((x0.shape[0],), t, dtype=torch.long)
        xt = d.q_sample(d.normalize(x0), tt, torch.randn(x0.shape, generator=g))
        abar = float(d.alphas_cumprod64[t])
        mean_expected = abar**0.5 * d.normalize(x0[0])
        assert torch.allclose(xt.mean(0), mean_expected.float(), atol=0.02)
        assert torch.allclose(xt.var(0), torch.full((8,), 1 - abar), atol=0.03)
    assert torch.allclose(d.unnormalize(d.normalize(x0[:3])), x0[:3])


def test_respaced_timesteps():
    assert respaced_timesteps(2000, 2000) == list(range(2000))
    ts = respaced_timesteps(2000, 50)
    assert len(ts) == 50 and ts[0] == 0 and ts[-1] == 1999 and ts == sorted(set(ts))
    assert respaced_timesteps(10, 1) == [9]
    with pytest.raises(ValueError, match="sampling steps"):
        respaced_timesteps(10, 11)


def _tiny_diffusion(T=50, schedule="linear", **kw):
    torch.manual_seed(0)
    model = build_denoiser({"name": "mlp", "length": 16, "kwargs": {"hidden": 32, "depth": 2}})
    for p in model.parameters():  # a non-trivial (non-zero-output) network
        torch.nn.init.normal_(p, std=0.05)
    return GaussianDiffusion(model, length=16, timesteps=T, schedule=schedule, **kw).eval()


def test_ddim_eta1_over_all_steps_equals_ancestral():
    """The K-step sampler with eta = 1 and K = T is DDPM ancestral sampling with sigma^2 = beta~."""
    d = _tiny_diffusion()
    a = d.sample(64, generator=torch.Generator().manual_seed(3))
    b = d.sample(64, steps=50, eta=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


class _SmallEps(torch.nn.Module):
    """eps(x, t) = 0.01 x: keeps the predicted x0 inside [0, 1] for x in (0, 0.5)."""

    def forward(self, x, t):
        return 0.01 * x


def test_clipped_step_equals_algorithm1_when_nothing_is_clipped():
    """Posterior-mean form (used with clipping) == Algorithm 1's eps form when x0 needs no clipping."""
    for schedule in ("linear", "cosine"):
        d = GaussianDiffusion(_SmallEps(), length=16, timesteps=100, schedule=schedule)
        d_clip = GaussianDiffusion(_SmallEps(), length=16, timesteps=100, schedule=schedule, clip_x0=True)
        g = torch.Generator().manual_seed(0)
        for t in (0, 1, 10, 50, 90):
            abar = float(d.alphas_cumprod64[t])
            x = (0.1 + 0.3 * torch.rand((8, 16), generator=g)) * abar**0.5  # x0 ~ x / sqrt(abar) in (0, 1)
            z = torch.randn((8, 16), generator=g)
            x0 = d.predict_x0(x, torch.full((8,), t), 0.01 * x)
            assert float(x0.min()) > 0 and float(x0.max()) < 1
            assert torch.allclose(d.p_sample(x, t, z), d_clip.p_sample(x, t, z), rtol=1e-4, atol=1e-5)
            assert torch.equal(d.p_sample(x, t, z, clip_x0=True), d_clip.p_sample(x, t, z))
    # clipping bites: a huge eps prediction gives an x0 far outside [0, 1]
    x = torch.full((2, 16), 5.0)
    assert float(d_clip.ddim_step(x, 50, -1, None, eta=0.0).max()) <= 1.0


def test_sampler_outputs_and_clip_range():
    d = _tiny_diffusion(data_range="symmetric", clip_x0=True)
    for steps, eta in [(None, 0.0), (7, 0.0), (7, 1.0)]:
        x = d.sample(5, steps=steps, eta=eta, generator=torch.Generator().manual_seed(0))
        assert x.shape == (5, 16) and x.dtype == torch.float32 and bool(torch.isfinite(x).all())
    # DDIM with eta = 0 and clipping ends on a clipped x0 prediction: inside [0, 1] after unnormalising
    x = d.sample(5, steps=7, eta=0.0, generator=torch.Generator().manual_seed(0))
    assert float(x.min()) >= 0 and float(x.max()) <= 1


# ------------------------------------------------------------------------------------------------
# Denoisers
# ------------------------------------------------------------------------------------------------
def test_block_tokens_default_layout():
    segs = block_tokens(Layout().blocks(), ead_row=50)
    assert len(segs) == 16 and segs[0] == (0, 50) and segs[-1] == (703, 704)
    assert all(a[1] == b[0] for a, b in zip(segs, segs[1:]))
    assert (600, 601) in segs and (601, 607) in segs and (607, 703) in segs
    assert len(block_tokens(Layout().blocks(), ead_row=None)) == 6
    with pytest.raises(ValueError, match="ead_row"):
        block_tokens(Layout().blocks(), ead_row=7)


@pytest.mark.parametrize("length", [704, 705, 13])
def test_unet1d_any_length(length):
    m = build_denoiser({"name": "unet1d", "length": length, "kwargs": {"dim": 8, "dim_mults": [1, 2, 4, 8]}})
    x = torch.randn(3, length, requires_grad=True)
    y = m(x, torch.tensor([0, 5, 1999]))
    assert y.shape == (3, length)
    y.square().mean().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


def test_unet1d_paper_architecture():
    from srd.diffusion.unet1d import Attention, LinearAttention, WSConv1d

    m = build_denoiser({"name": "unet1d", "length": 704, "kwargs": {}})
    assert m.init_conv.kernel_size == (7,) and m.init_conv.out_channels == 64
    assert m.time_mlp[-1].out_features == 256
    assert [down[0].block1.conv.in_channels for down in m.downs] == [64, 64, 128, 256]
    assert [down[3].out_channels for down in m.downs] == [64, 128, 256, 512]
    assert m.mid_block1.block1.conv.in_channels == 512
    assert len(m.downs) == 4 and len(m.ups) == 4
    assert isinstance(m.mid_attn.fn, Attention)
    lin = [mod for mod in m.modules() if isinstance(mod, LinearAttention)]
    assert len(lin) == 8 and all(a.heads == 4 and a.to_qkv.out_channels == 3 * 128 for a in lin)
    assert all(
        isinstance(mod.norm, torch.nn.GroupNorm) and mod.norm.num_groups == 8
        for mod in m.modules()
        if hasattr(mod, "conv") and isinstance(mod.conv, WSConv1d)
    )
    assert m.padded == 704


@pytest.mark.parametrize("name", ["mlp", "transformer", "unet1d"])
def test_denoisers_shapes_and_gradients(name):
    cfg = tiny_config(model=name)
    from srd.diffusion.trainer import model_spec

    spec = model_spec(cfg, length=704, blocks=Layout().blocks(), ead_row=50)
    m = build_denoiser(spec)
    x = torch.randn(4, 704)
    y = m(x, torch.tensor([0, 1, 50, 99]))
    assert y.shape == (4, 704)
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_transformer_tokens_are_block_local_at_input():
    """Each token's input projection reads only its own segment of R."""
    cfg = tiny_config(model="transformer")
    from srd.diffusion.trainer import model_spec

    m = build_denoiser(model_spec(cfg, length=704, blocks=Layout().blocks(), ead_row=50))
    x = torch.zeros(1, 704, requires_grad=True)
    tokens = m.embed(x)
    tokens[0, 12].sum().backward()  # token 12 = d_min
    nz = torch.nonzero(x.grad[0]).flatten().tolist()
    assert nz == [600]


def test_ema():
    lin = torch.nn.Linear(2, 1)
    ema = EMA(lin, decay=0.5)
    w0 = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(1.0)
    ema.update(lin)
    d = min(0.5, 1 / 10)
    assert torch.allclose(ema.shadow["weight"], d * w0 + (1 - d) * lin.weight)
    other = torch.nn.Linear(2, 1)
    ema.copy_to(other)
    assert torch.equal(other.weight, ema.shadow["weight"])


# ------------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------------
def test_config_validation_and_roundtrip():
    cfg = TrainConfig()
    assert (
        cfg.model == "unet1d" and cfg.diffusion.timesteps == 2000 and cfg.lr == 1e-4 and cfg.batch_size == 64
    )
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown key"):
        TrainConfig.from_dict({"learning_rate": 1.0})
    with pytest.raises(ValueError, match="unknown key"):
        TrainConfig.from_dict({"diffusion": {"steps": 10}})
    with pytest.raises(ValueError, match="model must be"):
        TrainConfig(model="resnet")
    with pytest.raises(ValueError, match="expected an integer"):
        TrainConfig.from_dict({"batch_size": "64"})
    assert cfg.replace(unet1d={"dim": 32}).unet1d == UNet1DConfig(dim=32)
    assert cfg.replace(mlp=MLPConfig(hidden=8)).mlp.hidden == 8
    assert cfg.replace(transformer=TransformerConfig(d_model=16, heads=2)).transformer.d_model == 16


@pytest.mark.parametrize("name", ["perov_5", "carbon_24", "mp_20"])
def test_paper_configs(name):
    cfg = TrainConfig.from_dict(load_toml(config_path(name)))
    assert cfg.dataset == name and cfg.model == "unet1d"
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (2000, 64, 1e-4)
    assert (cfg.diffusion.timesteps, cfg.diffusion.schedule) == (2000, "cosine")
    assert cfg.unet1d.dim == 64 and cfg.unet1d.dim_mults == (1, 2, 4, 8)


def test_small_config_parses():
    cfg = TrainConfig.from_dict(load_toml(config_path("small")))
    assert cfg.model in ("unet1d", "mlp", "transformer")


# ------------------------------------------------------------------------------------------------
# Training, checkpoints, sampling API
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def feats() -> Features:
    return synthetic_features(64)


def test_overfits_tiny_dataset(tmp_path):
    torch.manual_seed(0)
    f = synthetic_features(16, n_modes=2)
    cfg = tiny_config(max_steps=200, batch_size=16, lr=2e-3, log_every=20, mlp={"hidden": 64, "depth": 2})
    summary = train(cfg, f, tmp_path / "run", show_progress=False)
    losses = [float(r["loss"]) for r in read_log(tmp_path / "run")]
    assert summary["step"] == 200 and len(losses) == 10
    assert sum(losses[-5:]) / 5 < 0.3 * losses[0], losses


def test_checkpoint_contents_and_roundtrip(tmp_path, feats):
    run = tmp_path / "run"
    cfg = tiny_config(max_steps=10, checkpoint_every=5)
    train(cfg, feats, run, show_progress=False)
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    for key in (
        "model",
        "ema",
        "optimizer",
        "step",
        "epoch",
        "batch_in_epoch",
        "rng",
        "config",
        "model_spec",
        "stats",
        "dataset",
        "n_max",
        "params",
        "layout",
        "dim",
        "meta",
        "data",
    ):
        assert key in ck, key
    assert ck["step"] == 10 and ck["n_max"] == 5 and ck["dataset"] == "perov_5" and ck["dim"] == 704
    assert ck["layout"]["composition"] == [607, 703]
    assert ck["config"] == cfg.to_dict() and EADParams.from_dict(ck["params"]) == EADParams()
    assert "srd_version" in ck["meta"]
    diffusion, meta = load_checkpoint(run)
    assert isinstance(meta["scaling_stats"], ScalingStats) and meta["train_config"] == cfg
    assert torch.equal(meta["scaling_stats"].lo, feats.stats.lo)
    x, t = torch.rand(3, 704), torch.tensor([1, 2, 3])
    ref = build_denoiser(ck["model_spec"])
    ref.load_state_dict(ck["model"])
    with torch.no_grad():
        assert torch.equal(diffusion.model(x, t), ref(x, t))
    with pytest.raises(ValueError, match="not an srd diffusion checkpoint"):
        torch.save({"format": "x"}, tmp_path / "bad.pt")
        load_checkpoint(tmp_path / "bad.pt")


def test_seed_fixes_samples(tmp_path, feats):
    run = tmp_path / "run"
    train(tiny_config(max_steps=5), feats, run, show_progress=False)
    loaded = load_checkpoint(run)
    for steps in (None, 10):
        a = sample_representations(loaded, 6, sampling_steps=steps, batch_size=4, seed=7, progress=False)
        b = sample_representations(run, 6, sampling_steps=steps, batch_size=4, seed=7, progress=False)
        c = sample_representations(loaded, 6, sampling_steps=steps, batch_size=4, seed=8, progress=False)
        assert a.shape == (6, 704) and a.dtype == torch.float32
        assert torch.equal(a, b) and not torch.equal(a, c)
    # EMA and raw weights differ; eta = 1 differs from eta = 0
    raw = sample_representations(loaded, 4, sampling_steps=10, seed=7, use_ema=False, progress=False)
    ema = sample_representations(loaded, 4, sampling_steps=10, seed=7, progress=False)
    ancestral_k = sample_representations(loaded, 4, sampling_steps=10, eta=1.0, seed=7, progress=False)
    assert not torch.equal(raw, ema) and not torch.equal(ema, ancestral_k)
    with pytest.raises(ValueError, match="sampling_steps"):
        sample_representations(loaded, 2, sampling_steps=101, progress=False)


@pytest.mark.parametrize("model", ["mlp", "unet1d", "transformer"])
def test_resume_follows_the_same_loss_curve(tmp_path, feats, model):
    """Interrupt mid-epoch (8 batches per epoch), resume, and compare with an uninterrupted run bit for bit.

    Rows that a crashed run logged after its last checkpoint are dropped on resume."""
    steps, cut = {"mlp": (40, 13), "transformer": (30, 13), "unet1d": (10, 6)}[model]
    full = tmp_path / "full"
    cfg = tiny_config(model=model, max_steps=steps, checkpoint_every=1000)
    train(cfg, feats, full, show_progress=False)

    part = tmp_path / "part"
    train(cfg.replace(max_steps=cut, checkpoint_every=1000), feats, part, show_progress=False)
    # a crash after the checkpoint leaves log rows the checkpoint does not know: they must be dropped
    with (part / "log.csv").open("a") as fh:
        fh.write(f"{cut + 1},1,123.0,0.001,1.0\n{cut + 2},1,456.0,0.001,1.0\n")
    summary = train(cfg, feats, part, resume=True, show_progress=False)
    assert summary["resumed_from"] == cut and summary["step"] == steps

    a, b = read_log(full), read_log(part)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [str(s) for s in range(1, steps + 1)]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    ca = torch.load(full / "checkpoint.pt", weights_only=True)
    cb = torch.load(part / "checkpoint.pt", weights_only=True)
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k
    for k, v in ca["ema"]["shadow"].items():
        assert torch.equal(v, cb["ema"]["shadow"][k]), k
    assert (ca["epoch"], ca["batch_in_epoch"]) == (cb["epoch"], cb["batch_in_epoch"])


def test_run_dir_protection(tmp_path, feats):
    run = tmp_path / "run"
    cfg = tiny_config(max_steps=3)
    train(cfg, feats, run, show_progress=False)
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(cfg, feats, run, show_progress=False)
    with pytest.raises(FileExistsError, match="different config"):
        train(cfg.replace(lr=0.5), feats, run, show_progress=False)
    with pytest.raises(ValueError, match="different config"):
        train(cfg.replace(lr=0.5), feats, run, resume=True, show_progress=False)
    with pytest.raises(ValueError, match="training data differ"):
        train(cfg.replace(max_steps=5), synthetic_features(64, seed=1), run, resume=True, show_progress=False)
    # run length may change on resume
    s = train(cfg.replace(max_steps=5), feats, run, resume=True, show_progress=False)
    assert s["step"] == 5 and len(read_log(run)) == 5


def test_time_limit_stops_with_checkpoint(tmp_path, feats):
    cfg = tiny_config(max_steps=10**9, max_minutes=0.02, log_every=1000)
    s = train(cfg, feats, tmp_path / "run", show_progress=False)
    assert 0 < s["step"] < 10**9 and s["seconds"] >= 1.2
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == s["step"]
    assert len(read_log(tmp_path / "run")) == 1  # the partial interval is logged at the stop
