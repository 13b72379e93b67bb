"""The factored generator (issue 15): p(composition, size) x p(EAD, d_min, lattice | composition, size).

The composition model's grammar (only multisets of its vocabulary, summing to n <= n_max), chemical-system
restriction, the conditional DDPM holding its given blocks exactly, a trained run carrying its composition
model, formula handling and its errors.
"""

from __future__ import annotations

import pytest
import torch

from helpers import synthetic_features, tiny_config
from srd.diffusion.composition import (
    composition_block,
    compositions_from_R,
    fit_composition_model,
    formula_compositions,
)
from srd.representation.layout import N_ELEMENTS, Layout

pytestmark = pytest.mark.usefixtures("one_thread")

# Perovskite-like and rock-salt-like training compositions (Z -> atoms per cell)
TRAIN_COMPS = [
    {8: 3, 22: 1, 38: 1},
    {8: 3, 22: 1, 56: 1},
    {8: 3, 38: 1, 40: 1},
    {8: 2, 9: 1, 22: 1, 56: 1},
    {11: 1, 17: 1},
    {11: 2, 17: 2},
    {3: 1, 9: 1},
    {12: 1, 8: 1},
] * 8


@pytest.fixture(scope="module")
def comp_model():
    model, report = fit_composition_model(TRAIN_COMPS, 5, epochs=30, seed=0, holdout=0.0)
    return model, report


def test_composition_model_emits_only_vocabulary_multisets_within_n_max(comp_model):
    model, _ = comp_model
    vocab = {z for c in TRAIN_COMPS for z in c}
    comps = model.sample(400, generator=torch.Generator().manual_seed(1))
    assert len(comps) == 400
    for c in comps:
        assert c, "an empty composition"
        assert set(c) <= vocab
        assert all(k >= 1 for k in c.values())
        assert 1 <= sum(c.values()) <= 5
    # a fitted model puts most of its mass on the training compositions
    train = {tuple(sorted(c.items())) for c in TRAIN_COMPS}
    assert sum(tuple(sorted(c.items())) in train for c in comps) > 300


def test_composition_model_log_prob_prefers_training_compositions(comp_model):
    model, _ = comp_model
    lp = model.log_prob([{8: 3, 22: 1, 38: 1}, {8: 1, 11: 1, 17: 3}])
    assert torch.isfinite(lp).all()
    assert lp[0] > lp[1] + 2.0
    with pytest.raises(ValueError, match="Z = 92"):
        model.log_prob([{92: 1}])


def test_chemical_system_restricts_and_requires_all_elements(comp_model):
    model, _ = comp_model
    comps = model.sample(
        50, generator=torch.Generator().manual_seed(2), allowed_elements=[38, 22, 8], require_all=True
    )
    assert all(set(c) == {8, 22, 38} for c in comps)
    with pytest.raises(ValueError, match="never appear"):
        model.sample(5, allowed_elements=[92])


def test_composition_block_round_trip():
    layout = Layout()
    comps = [{8: 3, 22: 1, 38: 1}, {11: 2, 17: 2}, {6: 5}]
    R = torch.zeros((3, layout.dim))
    R[:, layout.composition.start :] = composition_block(comps, 5)
    assert compositions_from_R(R, layout, 5) == comps
    with pytest.raises(ValueError, match="6 atoms"):
        composition_block([{6: 6}], 5)


def test_formula_compositions_and_errors(comp_model):
    model, _ = comp_model
    assert formula_compositions(model, "SrTiO3", 3, n_max=5) == [{38: 1, 22: 1, 8: 3}] * 3
    # without --formula-units, the samples are split over the K that fit (NaCl: 1 or 2 formula units) in
    # proportion to the model's p(composition): largest-remainder shares, the most probable K first
    got = formula_compositions(model, "NaCl", 40, n_max=5)
    ks = [sum(c.values()) // 2 for c in got]
    assert len(ks) == 40 and set(ks) <= {1, 2}
    p = torch.softmax(model.log_prob([{11: 1, 17: 1}, {11: 2, 17: 2}]), dim=0)
    assert abs(ks.count(1) - 40 * float(p[0])) < 1
    assert ks == sorted(ks, key=lambda k: -float(p[k - 1]))
    assert formula_compositions(model, "Na2Cl2", 2, n_max=5, formula_units=2) == [{11: 2, 17: 2}] * 2
    with pytest.raises(ValueError, match="7 atoms per formula unit.*n_max = 5"):
        formula_compositions(model, "Sr2TiO4", 1, n_max=5)
    with pytest.raises(ValueError, match="formula-units 3"):
        formula_compositions(model, "NaCl", 1, n_max=5, formula_units=3)
    with pytest.raises(ValueError, match="Au never appear"):
        formula_compositions(model, "AuCl", 1, n_max=5)
    with pytest.raises(ValueError, match="not a chemical formula"):
        formula_compositions(model, "Xq2", 1, n_max=5)


def _conditional_diffusion(length: int):
    from srd.diffusion.denoisers import MLPDenoiser
    from srd.diffusion.gaussian import GaussianDiffusion
    from srd.diffusion.trainer import condition_mask

    model = MLPDenoiser(length, hidden=32, depth=1, time_dim=32)
    return GaussianDiffusion(
        model, length=length, timesteps=50, clip_x0=True, cond_mask=condition_mask("composition", length)
    )


def test_conditional_sample_keeps_the_given_blocks_exactly():
    layout = Layout()
    diff = _conditional_diffusion(layout.dim).eval()
    comps = [{8: 3, 22: 1, 38: 1}, {11: 1, 17: 1}]
    cond = composition_block(comps, 5)
    for steps, guidance in [(None, 1.0), (10, 2.0)]:
        x = diff.sample(
            2, steps=steps, generator=torch.Generator().manual_seed(0), cond=cond, guidance=guidance
        )
        assert torch.equal(x[:, layout.composition.start :], cond)
        assert compositions_from_R(x, layout, 5) == comps
    with pytest.raises(ValueError, match="needs cond of shape"):
        diff.sample(2)


def test_conditional_loss_ignores_the_given_entries():
    layout = Layout()
    diff = _conditional_diffusion(layout.dim)
    x0 = torch.rand((4, layout.dim))
    x0[:, layout.composition.start :] = composition_block([{8: 3, 22: 1, 38: 1}] * 4, 5)
    t = torch.randint(0, 50, (4,))
    noise = torch.randn_like(x0)
    base = diff.loss(x0, t, noise)
    noise2 = noise.clone()
    noise2[:, layout.composition.start :] += 5.0  # the given entries are not noised, nor scored
    assert torch.allclose(diff.loss(x0, t, noise2), base)
    # a dropped condition changes what the denoiser sees
    drop = torch.ones(4, dtype=torch.bool)
    assert not torch.allclose(diff.loss(x0, t, noise, drop=drop), base)


def test_trained_conditional_run_carries_its_composition_model(tmp_path):
    from srd.diffusion import load_checkpoint, sample_representations
    from srd.diffusion.trainer import train
    from srd.representation import decode

    feats = synthetic_features(48)
    layout = feats.layout
    comps = [TRAIN_COMPS[i % 8] for i in range(48)]
    feats.R[:, layout.composition.start :] = composition_block(comps, 5)
    config = tiny_config(max_steps=6, diffusion={"timesteps": 20, "condition": "composition"})
    train(config, feats, tmp_path / "run", show_progress=False)
    loaded = load_checkpoint(tmp_path / "run")
    assert loaded[0].conditional and loaded[1]["composition_model"] is not None
    R = sample_representations(loaded, 6, seed=3, progress=False)
    drawn = compositions_from_R(R, layout, 5)
    vocab = {z for c in TRAIN_COMPS for z in c}
    assert all(set(c) <= vocab for c in drawn)
    for d, c in zip(decode(R.double(), feats.stats, 5, "largest-remainder"), drawn):
        # the synthetic lattice block may not decode; a composition always does, exactly
        assert getattr(d, "numbers", None) in (None, sorted(z for z, k in c.items() for _ in range(k)))
        assert "composition" not in str(getattr(d, "reason", ""))
    given = [{11: 2, 17: 2}] * 6
    R2 = sample_representations(loaded, 6, seed=3, progress=False, compositions=given)
    assert torch.equal(R2[:, layout.composition.start :], composition_block(given, 5))
    assert R2.shape[1] == layout.dim and N_ELEMENTS == 96
