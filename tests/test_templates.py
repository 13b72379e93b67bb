"""Template starts (srd.reconstruction.templates): training crystals as starts of the search."""

import gzip

import numpy as np
import pytest

from helpers import DATA

pytestmark = pytest.mark.usefixtures("one_thread", "isolated_cache")

# KRb2AsF6 (MP-20 val, a 10-atom double perovskite): the fast budget of uniform starts misses it; its
# structure type is in MP-20's train split (mp-1112669 and others).
TARGET = "mp-1114640"
TEMPLATE_IDS = ["mp-1112669", "mp-1518621", "mp-1205575", "mp-1113749"]


def _rows(path, ids=None, n=None):
    import pandas as pd

    df = pd.read_csv(path)
    if ids is not None:
        df = df[df.material_id.isin(ids)]
    return df.head(n) if n else df


@pytest.fixture(scope="module")
def library_csv(tmp_path_factory):
    """A small training file: the target's templates and 30 other train crystals."""
    import pandas as pd

    train = DATA / "mp_20" / "train_PARTIAL.csv.gz"
    df = pd.concat([_rows(train, TEMPLATE_IDS), _rows(train, n=30)]).drop_duplicates("material_id")
    path = tmp_path_factory.mktemp("templates") / "train_small.csv.gz"
    with gzip.open(path, "wt") as f:
        df.to_csv(f, index=False)
    return path


def _target():
    from pymatgen.core import Structure

    from srd.representation import decoded_from_structures
    from srd.structures import canonicalize

    row = _rows(DATA / "mp_20" / "val.csv.gz", [TARGET])
    s = canonicalize(Structure.from_str(row.cif.iloc[0], "cif"))
    return s, decoded_from_structures([s], n_max=20)[0]


def test_a_template_start_has_the_targets_composition_in_the_targets_order(library_csv):
    from srd.reconstruction.templates import TemplateLibrary

    lib = TemplateLibrary.from_files([library_csv])
    _, d = _target()
    starts = lib.starts(d.numbers, d.lengths, d.angles, 3)
    assert len(starts) == 3
    for frac, tid in starts:
        assert frac.shape == (d.n_atoms, 3)
        assert np.all((frac >= 0) & (frac < 1))
        template = next(t for t in lib.templates if t.id == tid)
        assert template.pattern == (1, 1, 2, 6)  # K Rb2 As F6: the same count pattern
    # the cache gives back the same library
    again = TemplateLibrary.from_files([library_csv])
    assert [t.id for t in again.templates] == [t.id for t in lib.templates]
    assert all(np.array_equal(a.frac, b.frac) for a, b in zip(again.templates, lib.templates))


def test_a_crystal_is_never_its_own_template(library_csv):
    from srd.reconstruction.templates import TemplateLibrary

    lib = TemplateLibrary.from_files([library_csv])
    t = lib.templates[0]
    numbers = list(t.numbers)
    ids = [tid for _, tid in lib.starts(numbers, t.lengths, t.angles, 50, exclude={t.id})]
    assert t.id not in ids


def test_element_assignment_keeps_counts_and_tries_both_orders_of_equal_counts():
    from srd.reconstruction.templates import _assignments

    # template Sr Ti O3 (Z 38, 22, 8 x3) onto Ba Zr O3 (56, 40, 8 x3): O -> O; the two cations both ways
    maps = _assignments([8, 8, 8, 22, 38], [8, 8, 8, 40, 56])
    assert len(maps) == 2
    for m in maps:
        assert m[8] == 8
        assert {m[22], m[38]} == {40, 56}
    # by electronegativity: Ti (1.54) is more electronegative than Sr (0.95), Zr (1.33) than Ba (0.89)
    assert maps[0] == {8: 8, 22: 40, 38: 56}


def test_template_starts_recover_a_crystal_uniform_starts_miss(library_csv):
    from srd.metrics.recon import match_one
    from srd.reconstruction import ReconstructConfig
    from srd.reconstruction.algorithm import reconstruct
    from srd.reconstruction.templates import TemplateLibrary

    s, d = _target()
    cfg = ReconstructConfig.preset("fast")
    assert cfg.template_trials > 0
    lib = TemplateLibrary.from_files([library_csv])
    uniform = reconstruct([d], [TARGET], config=cfg)[0]  # no library: every trial starts uniformly
    templated = reconstruct([d], [TARGET], config=cfg, templates=lib)[0]
    assert match_one(uniform.structure, s) is None
    assert match_one(templated.structure, s) is not None
    assert templated.loss < 1e-4 < uniform.loss


def test_the_template_screen_starts_from_the_lowest_loss_candidate_and_counts_its_evaluations(library_csv):
    from srd.reconstruction import ReconstructConfig
    from srd.reconstruction.algorithm import reconstruct
    from srd.reconstruction.templates import TemplateLibrary

    _, d = _target()
    lib = TemplateLibrary.from_files([library_csv])
    n_candidates = len(lib.starts(d.numbers, d.lengths, d.angles, 8))
    assert n_candidates > 1
    one_step = ReconstructConfig(trials=1, hops=1, steps=1, template_trials=1)
    plain = reconstruct([d], [TARGET], config=one_step, templates=lib)[0]
    screened = reconstruct([d], [TARGET], config=one_step.replace(template_screen=8), templates=lib)[0]
    assert plain.evaluations == 1 and screened.evaluations == 1 + n_candidates
    assert screened.loss <= plain.loss  # the best of the candidates, not merely the closest cell shape
    assert one_step.replace(template_screen=8).evaluations_per_crystal == 1 + 8
