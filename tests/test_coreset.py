"""Selectors: sizes, determinism, class balancing, and planted answers for each method."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from samplewise.coreset import (SELECTORS, class_quotas, list_selectors, select, subset_size,
                                summarize_selection)
from samplewise.formats.subset import read_subset, write_subset
from samplewise.errors import SamplewiseError
from samplewise.hardness import SCORE_NAMES, ScoreTable

FP = "fedcba9876543210"


def make_table(n: int = 1000, classes: int = 10, seed: int = 0, **overrides) -> ScoreTable:
    """Synthetic table: every score, features, per-epoch AIGN, shuffled non-contiguous indices."""
    rng = np.random.default_rng(seed)
    epochs = 6
    weights = np.linspace(1, 3, classes)                            # unequal class sizes
    fields = dict(
        index=rng.choice(7 * n, size=n, replace=False),            # unsorted, with gaps
        labels=rng.choice(classes, size=n, p=weights / weights.sum()),
        scores={name: rng.random(n).astype(np.float32) for name in SCORE_NAMES},
        aign_per_epoch=rng.random((n, epochs)).astype(np.float16),
        features=rng.normal(size=(n, 8)).astype(np.float16),
        meta={"dataset": "toy", "fingerprint": FP, "num_train": 7 * n,
              "tracked_epochs": list(range(epochs))},
    )
    fields.update(overrides)
    return ScoreTable(**fields)


TABLE = make_table()


def by_index(table: ScoreTable, positions) -> np.ndarray:
    return np.sort(table.index[np.asarray(positions)])


# ---------------------------------------------------------------------------- every selector
@pytest.mark.parametrize("method", SELECTORS.names())
@pytest.mark.parametrize("class_balanced", [False, True])
def test_every_selector_size_uniqueness_determinism(method, class_balanced):
    for fraction in (0.01, 0.3, 0.5, 1.0):
        k = math.ceil(fraction * len(TABLE))
        idx = select(TABLE, method, fraction, class_balanced=class_balanced, seed=3)
        assert idx.dtype == np.int64 and len(idx) == k
        assert (np.diff(idx) > 0).all(), "sorted and unique"
        assert np.isin(idx, TABLE.index).all()
        again = select(TABLE, method, fraction, class_balanced=class_balanced, seed=3)
        np.testing.assert_array_equal(idx, again)
        if class_balanced:
            labels = dict(zip(np.sort(TABLE.index), TABLE.labels[np.argsort(TABLE.index)]))
            got = np.bincount([labels[i] for i in idx], minlength=10)
            want = k * np.bincount(TABLE.labels, minlength=10) / len(TABLE)
            assert got.sum() == k and (np.abs(got - want) < 1).all()


@pytest.mark.parametrize("method", SELECTORS.names())
def test_every_selector_on_a_tiny_odd_table(method):
    table = make_table(n=7, classes=3, seed=1)
    for cb in (False, True):
        for fraction in (0.01, 0.5, 1.0):
            idx = select(table, method, fraction, class_balanced=cb)
            assert len(idx) == len(np.unique(idx)) == math.ceil(fraction * 7)
            assert np.isin(idx, table.index).all()


@pytest.mark.parametrize("fraction", [0, 1.5, -0.1, float("nan"), True, "0.3", None])
def test_bad_fractions(fraction):
    with pytest.raises(SamplewiseError, match="fraction"):
        select(TABLE, "random", fraction)


def test_subset_size_rounding():
    assert subset_size(0.07, 100) == 7 and subset_size(0.3, 1000) == 300
    assert subset_size(0.001, 10) == 1 and subset_size(1.0, 13) == 13
    assert subset_size(0.5, 7) == 4


def test_random_depends_on_seed_and_errors_are_clear():
    assert not np.array_equal(select(TABLE, "random", 0.1, seed=0),
                              select(TABLE, "random", 0.1, seed=1))
    with pytest.raises(SamplewiseError, match="unknown selector 'nope'; choose from: easycore"):
        select(TABLE, "nope", 0.1)
    with pytest.raises(SamplewiseError, match="does not take option.*beta.*its options: keep"):
        select(TABLE, "el2n", 0.1, beta=0.2)
    with pytest.raises(SamplewiseError, match="keep must be"):
        select(TABLE, "aum", 0.1, keep="middle")
    with pytest.raises(SamplewiseError, match="seed"):
        select(TABLE, "random", 0.1, seed=-1)
    assert set(list_selectors()) == set(SELECTORS.names())
    assert all(e.meta.get("keeps") for e in SELECTORS.entries())


def test_class_quotas_largest_remainder():
    labels = np.repeat([0, 1, 2], [5, 3, 2])
    assert [q for *_, q in class_quotas(labels, 5)] == [3, 1, 1]  # 2.5, 1.5, 1.0 -> tie to class 0
    for k in range(1, 11):
        quotas = [q for *_, q in class_quotas(labels, k)]
        assert sum(quotas) == k and all(q <= n for q, n in zip(quotas, [5, 3, 2]))


# ---------------------------------------------------------------------------- planted answers
def test_easycore_and_hardcore_pick_the_planted_ends():
    rng = np.random.default_rng(5)
    aign = rng.uniform(1, 2, 1000).astype(np.float32)
    easy = rng.permutation(1000)[:300]
    aign[easy] = rng.uniform(0, 0.5, 300)
    hard = np.setdiff1d(np.arange(1000), easy)[:100]
    aign[hard] = rng.uniform(5, 6, 100)
    table = make_table(scores={"aign": aign})
    np.testing.assert_array_equal(select(table, "easycore", 0.3), by_index(table, easy))
    np.testing.assert_array_equal(select(table, "hardcore", 0.1), by_index(table, hard))


def test_ties_are_broken_by_dataset_index():
    table = make_table(scores={name: np.ones(1000, np.float32) for name in SCORE_NAMES})
    lowest = np.sort(table.index)[:100]
    for method in ("easycore", "hardcore", "el2n", "forgetting"):
        np.testing.assert_array_equal(select(table, method, 0.1), lowest)
    el2n = np.ones(1000, np.float32)
    el2n[np.argsort(table.index)[-5:]] = 2.0        # five clear winners with the highest indices
    table = make_table(scores={"el2n": el2n})
    expected = np.sort(np.concatenate([np.sort(table.index)[-5:], np.sort(table.index)[:5]]))
    np.testing.assert_array_equal(select(table, "el2n", 0.01), expected)


@pytest.mark.parametrize("method", ["el2n", "grand", "forgetting", "aum", "loss"])
def test_score_selectors_keep_hardest_and_flip(method):
    values = TABLE.get(method)
    hardest = by_index(TABLE, np.argsort(-values)[:200])
    easiest = by_index(TABLE, np.argsort(values)[:200])
    np.testing.assert_array_equal(select(TABLE, method, 0.2), hardest)
    np.testing.assert_array_equal(select(TABLE, method, 0.2, keep="easiest"), easiest)


def test_easycore_window_uses_the_per_epoch_mean():
    window_mean = TABLE.aign_per_epoch[:, 2:5].astype(np.float64).mean(1).astype(np.float32)
    expected = by_index(TABLE, np.lexsort((TABLE.index, window_mean))[:150])
    np.testing.assert_array_equal(select(TABLE, "easycore", 0.15, window=(2, 5)), expected)
    assert not np.array_equal(expected, select(TABLE, "easycore", 0.15))


def test_ccs_drops_the_hardest_beta_and_covers_every_stratum():
    """The AIGN-stratified variant (score="aign"); the AUM default is tested in test_ccs.py."""
    rng = np.random.default_rng(2)
    aign = rng.uniform(0, 1, 1000).astype(np.float32)
    planted = rng.permutation(1000)[:100]
    aign[planted] = rng.uniform(10, 11, 100)
    table = make_table(scores={"aign": aign})
    for seed in range(3):
        idx = select(table, "ccs", 0.5, score="aign", beta=0.1, seed=seed)
        assert not np.isin(table.index[planted], idx).any()
    # equal-width strata over [0, 1): every one of 10 strata is represented at a 20% budget
    idx = select(table, "ccs", 0.2, score="aign", beta=0.1, strata=10)
    chosen = aign[np.isin(table.index, idx)]
    assert set(np.minimum((chosen * 10).astype(int), 9)) == set(range(10))
    # dropping beta would leave too few: keep the easiest k instead
    np.testing.assert_array_equal(select(table, "ccs", 0.5, score="aign", beta=0.9),
                                  by_index(table, np.argsort(aign)[:500]))


def test_ccs_fills_from_the_smallest_stratum_up():
    rng = np.random.default_rng(4)
    sizes = {0: 3, 1: 50, 2: 200}                    # strata [0, 1/3), [1/3, 2/3), [2/3, 1]
    values = np.concatenate([rng.uniform(0.0, 0.1, 3), rng.uniform(0.4, 0.5, 50),
                             rng.uniform(0.8, 1.0, 200)])
    values[[0, -1]] = 0.0, 1.0
    n = len(values)
    table = ScoreTable(np.arange(n), np.zeros(n, int), {"el2n": values})
    idx = select(table, "ccs", 60 / n, score="el2n", beta=0.0, strata=3)
    counts = np.bincount(np.minimum((values[idx] * 3).astype(int), 2), minlength=3)
    assert counts.tolist() == [3, 28, 29] and sum(sizes.values()) == n


def _rings(radii, center, scale=1.0):
    """Four points per radius on the axes around ``center``: the per-class median is ``center``."""
    pts = [center + scale * r * np.array(d) for r in radii
           for d in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    return np.array(pts, dtype=np.float16)


def test_moderate_picks_the_median_distance():
    feats = _rings(range(1, 10), np.zeros(2))        # distances 1..9, four of each
    n = len(feats)
    table = ScoreTable(np.arange(n) * 2, np.zeros(n, int), features=feats)
    idx = select(table, "moderate", 4 / n)
    np.testing.assert_array_equal(idx, np.arange(16, 20) * 2)  # the four points at radius 5
    two = np.concatenate([feats, _rings(range(1, 10), np.array([50.0, -20.0]), scale=3.0)])
    table = ScoreTable(np.arange(2 * n), np.repeat([0, 1], n), features=two)
    idx = select(table, "moderate", 8 / (2 * n), class_balanced=True)
    np.testing.assert_array_equal(idx, np.r_[16:20, n + 16:n + 20])
    with pytest.raises(SamplewiseError, match="no 'features'.*samplewise score"):
        select(ScoreTable([0, 1], [0, 0]), "moderate", 0.5)


def test_kcenter_one_center_per_cluster():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(5, 4)) * 100
    feats = (np.repeat(centers, 20, axis=0) + rng.normal(size=(100, 4)) * 0.1).astype(np.float16)
    cluster = np.repeat(np.arange(5), 20)
    perm = rng.permutation(100)
    table = ScoreTable(perm * 3, np.zeros(100, int), features=feats)
    for seed in range(5):
        idx = select(table, "kcenter", 0.05, seed=seed)
        assert sorted(cluster[np.isin(table.index, idx)]) == [0, 1, 2, 3, 4]
    with pytest.raises(SamplewiseError, match="kcenter needs penultimate features"):
        select(ScoreTable([0, 1], [0, 0]), "kcenter", 0.5)


def test_kcenter_is_a_two_approximation():
    def radius(x, chosen):
        d = np.linalg.norm(x[:, None, :] - x[list(chosen)][None], axis=2)
        return d.min(axis=1).max()

    for seed in range(6):
        rng = np.random.default_rng(seed)
        feats = rng.normal(size=(9, 2)).astype(np.float16)
        x = feats.astype(np.float64)
        table = ScoreTable(np.arange(9), np.zeros(9, int), features=feats)
        chosen = select(table, "kcenter", 3 / 9, seed=seed)
        best = min(radius(x, c) for c in itertools.combinations(range(9), 3))
        assert radius(x, chosen) <= 2 * best + 1e-6


def test_large_table_easycore():
    n = 1_280_000
    rng = np.random.default_rng(0)
    table = ScoreTable(np.arange(n), rng.integers(0, 1000, n),
                       {"aign": rng.random(n, dtype=np.float32)})
    idx = select(table, "easycore", 0.1)
    assert len(idx) == 128_000
    assert table.get("aign")[idx].max() <= np.partition(table.get("aign"), 128_000)[128_000]


# ---------------------------------------------------------------------------- custom selectors
def test_registering_a_selector_and_checking_its_answer():
    @SELECTORS.register("test-middle", help="middle of the el2n ranking", keeps="middle")
    def middle(table, k, rng, offset=0.5):
        order = np.argsort(table.get("el2n"))
        start = int(offset * (len(table) - k))
        return order[start:start + k]

    @SELECTORS.register("test-broken", help="returns duplicates", keeps="nothing")
    def broken(table, k, rng):
        return np.zeros(k, dtype=np.int64)

    try:
        assert len(select(TABLE, "test-middle", 0.2, offset=0.0, class_balanced=True)) == 200
        with pytest.raises(SamplewiseError, match="selector 'test-broken' returned"):
            select(TABLE, "test-broken", 0.2)
    finally:
        for name in ("test-middle", "test-broken"):
            SELECTORS._entries.pop(name, None)


# ---------------------------------------------------------------------------- selection files
def test_summary_and_selection_files(tmp_path):
    table = make_table()
    table.source = "scores.npz"
    idx = select(table, "easycore", 0.3)
    summary = summarize_selection(table, idx)
    assert summary["size"] == 300 and summary["fraction"] == pytest.approx(0.3)
    assert sum(summary["class_histogram"].values()) == 300
    aign = summary["scores"]["aign"]
    assert aign["inside"] < aign["outside"]
    assert summary["fingerprint"] == FP and summary["dataset"] == "toy"
    npy, js = write_subset(tmp_path / "run" / "subset.npy", idx, summary)
    back = np.load(npy)
    assert back.dtype == np.int64
    np.testing.assert_array_equal(back, idx)
    meta = read_subset(npy).summary
    assert meta["fingerprint"] == FP and meta["size"] == 300 and meta["score_file"] == "scores.npz"
    assert json.loads(js.read_text())["format"] == "samplewise.subset/1"
    np.save(tmp_path / "other.npy", idx)  # a hand-made subset file: no summary
    assert read_subset(tmp_path / "other.npy").summary is None
    np.save(tmp_path / "bad.npy", idx)
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(SamplewiseError, match="bad.json"):
        read_subset(tmp_path / "bad.npy")
    with pytest.raises(SamplewiseError, match="not in the score table"):
        summarize_selection(table, np.array([10**9]))
    with pytest.raises(SamplewiseError, match="distinct"):
        write_subset(tmp_path / "dup.npy", np.array([1, 1]))
