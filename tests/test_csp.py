"""Structure prediction scoring (DiffCSP's protocol): known answers for @1, @K and RMSE, another tool's
multi-eval CDVAE-format file, and the plan srd-sample writes."""

from __future__ import annotations

import pytest
import torch

from helpers import DATA, real_crystals
from srd.metrics.csp import csp_scores, evaluate_csp_pt, make_plan, plan_compositions

pytestmark = pytest.mark.usefixtures("one_thread")


def test_csp_scores_known_answers():
    rms = [[None, 0.1], [0.2, None], [], [None, None]]
    losses = [[0.5, 0.1], [0.1, 0.5], [], [0.1, 0.2]]
    r = csp_scores(rms, losses)
    assert r["n"] == 4 and r["k"] == 2
    assert r["at_1"] == {"match_rate": 25.0, "rmse": pytest.approx(0.2), "n_matched": 1}
    assert r["at_2"]["match_rate"] == 50.0 and r["at_2"]["rmse"] == pytest.approx(0.15)
    # the lowest-loss pick: target 0 picks its 2nd (matched), target 1 its 1st (matched)
    assert r["ranked_at_1"]["match_rate"] == 50.0


def test_another_tools_multi_eval_file(tmp_path):
    from srd.structures import save_cdvae_pt

    truth = list(real_crystals("perov_5", 6))
    ref = tmp_path / "ref.csv"
    import pandas as pd

    pd.DataFrame(
        {"material_id": [f"m{i}" for i in range(6)], "cif": [s.to(fmt="cif") for s in truth]}
    ).to_csv(ref, index=False)
    from pymatgen.core import Lattice, Structure

    # the same atoms in a cell stretched 2.2x along c: outside ltol = 0.3 even after volume scaling, a miss
    wrong = [
        Structure(
            Lattice.from_parameters(s.lattice.a, s.lattice.a, 2.2 * s.lattice.a, 90, 90, 90),
            s.species,
            s.frac_coords,
        )
        for s in truth
    ]
    save_cdvae_pt(tmp_path / "a.pt", wrong)
    save_cdvae_pt(tmp_path / "b.pt", truth)
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    torch.save({k: torch.cat([a[k], b[k]]) for k in a}, tmp_path / "two.pt")
    r = evaluate_csp_pt(tmp_path / "two.pt", ref)
    assert r["k"] == 2 and r["n"] == 6
    assert r["at_1"]["match_rate"] == 0.0
    assert r["at_2"]["match_rate"] == 100.0 and r["at_2"]["rmse"] < 1e-4


def test_plan_skips_what_the_model_cannot_take_and_counts_it_as_a_miss():
    targets = [(f"t{i}", s) for i, s in enumerate(real_crystals("perov_5", 3))] + [("bad", None)]
    vocab = {z for _, s in targets[:2] for z in s.atomic_numbers}
    plan = make_plan(targets, 3, vocabulary=vocab, n_max=5, reference=str(DATA), rows=None, sample=None)
    entries = plan["targets"]
    assert entries[0]["gen_ids"] == ["gen_000000", "gen_000001", "gen_000002"]
    assert entries[1]["gen_ids"] == ["gen_000003", "gen_000004", "gen_000005"]
    third = set(targets[2][1].atomic_numbers)
    if not third <= vocab:
        assert "never in the training data" in entries[2]["reason"]
    assert entries[3]["reason"].startswith("the reference crystal could not be read")
    comps = plan_compositions(plan)
    assert len(comps) == 3 * sum("gen_ids" in e for e in entries)
    assert sum(comps[0].values()) == len(targets[0][1])
    # a miss for a skipped target
    rms = [[0.0] * 3 if "gen_ids" in e else [] for e in entries]
    assert csp_scores(rms)["at_1"]["match_rate"] == pytest.approx(
        100.0 * sum("gen_ids" in e for e in entries) / 4
    )
