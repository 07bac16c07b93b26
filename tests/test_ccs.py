"""ccs (Zheng et al. 2023): AUM by default, as published; AIGN only when asked for.

The expected answers are worked out here from the definition (drop the hardest beta, equal-width
strata over the remaining score range, fill the budget from the smallest stratum up, uniform
within a stratum), not by calling the selector's own helpers.
"""

from __future__ import annotations

import numpy as np
import pytest

from samplewise.coreset import SELECTORS, select
from samplewise.hardness import ScoreTable


def planted_table():
    """AUM and AIGN disagree completely: AIGN is AUM reversed.

    100 samples. By AUM (higher = harder) the 10 hardest (2.9 to 3.9) go at beta 0.1; the rest
    spans [0, 2.5], which 3 equal-width strata cut at 0.83 and 1.67: 2 samples in the first,
    5 in the second, 83 in the third.
    """
    rng = np.random.default_rng(7)
    aum = np.concatenate([[0.0, 0.5],                       # stratum 0: 2 samples
                          rng.uniform(1.1, 1.6, 5),         # stratum 1: 5 samples
                          rng.uniform(2.0, 2.5, 83),        # stratum 2 after the drop: 83
                          np.linspace(2.9, 3.9, 10)])       # the 10 hardest: dropped at beta 0.1
    aum[2 + 5] = 2.5                                        # pins the range of the pool to [0, 2.5]
    n = len(aum)
    perm = rng.permutation(n)                               # dataset order unrelated to scores
    aum = aum[perm]
    aign = (aum.max() - aum).astype(np.float32)             # the opposite ranking
    table = ScoreTable(np.arange(n) * 3 + 1, np.zeros(n, np.int64),
                       {"aum": aum.astype(np.float32), "aign": aign})
    return table, aum.astype(np.float32), aign


def allocation_by_hand(values: np.ndarray, k: int, beta: float, strata: int):
    """(dropped positions, pool positions, stratum of each pool position, expected count per
    stratum) from the definition; the count rule is the paper's Algorithm 1 written out."""
    n = len(values)
    drop = min(int(np.floor(beta * n + 1e-9)), n - k)
    order = sorted(range(n), key=lambda i: (-float(values[i]), i))
    dropped, pool = set(order[:drop]), sorted(order[drop:])
    lo, hi = min(values[pool]), max(values[pool])
    width = (hi - lo) / strata
    stratum = {i: (strata - 1 if values[i] == hi else int((values[i] - lo) // width))
               for i in pool}
    sizes = {s: sum(1 for i in pool if stratum[i] == s) for s in set(stratum.values())}
    want, budget = {}, k
    for j, s in enumerate(sorted(sizes, key=lambda s: (sizes[s], s))):
        want[s] = min(sizes[s], budget // (len(sizes) - j))
        budget -= want[s]
    return dropped, pool, stratum, want


def test_default_stratifies_by_aum_not_aign():
    table, aum, aign = planted_table()
    n, k = len(table), 30
    by_aum = {int(i) for i in np.flatnonzero(np.isin(table.index,
                                                     select(table, "ccs", k / n, strata=3)))}
    # the hand-worked answer: drop the 10 largest AUM, take strata 0 and 1 whole (2 + 5), and
    # the remaining 23 from stratum 2
    hardest10 = set(np.argsort(-aum)[:10].tolist())
    stratum0 = set(np.flatnonzero(aum < 1).tolist())
    stratum1 = set(np.flatnonzero((aum >= 1) & (aum < 2)).tolist())
    assert n == 100 and len(stratum0) == 2 and len(stratum1) == 5
    assert not by_aum & hardest10
    assert stratum0 | stratum1 <= by_aum
    assert len(by_aum - stratum0 - stratum1) == 23
    # the same from the written-out definition
    dropped, pool, stratum, want = allocation_by_hand(aum, k, 0.1, 3)
    assert dropped == hardest10 and want == {0: 2, 1: 5, 2: 23}
    got = {s: sum(1 for i in by_aum if stratum[i] == s) for s in want}
    assert got == want
    # ... and it is not the AIGN-stratified answer: that one drops the 10 lowest AUM instead
    by_aign = {int(i) for i in np.flatnonzero(np.isin(table.index,
                                                      select(table, "ccs", k / n, score="aign",
                                                             strata=3)))}
    assert by_aign != by_aum
    assert not by_aign & set(np.argsort(aum)[:10].tolist())
    assert by_aign & hardest10                             # AIGN calls them the easiest


def test_aign_variant_is_the_same_rule_over_aign():
    table, aum, aign = planted_table()
    n, k = len(table), 30
    chosen = {int(i) for i in np.flatnonzero(np.isin(table.index,
                                                     select(table, "ccs", k / n, score="aign")))}
    dropped, pool, stratum, want = allocation_by_hand(aign, k, 0.1, 50)
    assert not chosen & dropped
    assert {s: sum(1 for i in chosen if stratum[i] == s) for s in want} == want


@pytest.mark.parametrize("score", [None, "aign"])
@pytest.mark.parametrize("fraction,beta,strata", [(0.05, 0.1, 50), (0.3, 0.1, 50),
                                                  (0.5, 0.2, 7), (0.85, 0.1, 10), (0.9, 0.3, 5)])
def test_invariants_on_skewed_scores(score, fraction, beta, strata):
    """Both variants: k distinct samples, none of the dropped, per-stratum counts as Algorithm 1
    gives them, and the shape of that rule (whole small strata, the others within one)."""
    rng = np.random.default_rng(11)
    n = 600
    scores = {"aum": rng.lognormal(0, 1, n).astype(np.float32),     # skewed: uneven strata
              "aign": rng.gamma(2.0, 1.0, n).astype(np.float32)}
    table = ScoreTable(rng.permutation(5 * n)[:n], rng.integers(0, 3, n), scores)
    values = scores[score or "aum"]
    k = int(np.ceil(round(fraction * n, 6)))
    idx = select(table, "ccs", fraction, beta=beta, strata=strata, score=score, seed=5)
    assert len(idx) == k == len(set(idx.tolist()))
    chosen = set(np.flatnonzero(np.isin(table.index, idx)).tolist())
    dropped, pool, stratum, want = allocation_by_hand(values, k, beta, strata)
    assert not chosen & dropped
    got = {s: sum(1 for i in chosen if stratum[i] == s) for s in want}
    assert got == want
    sizes = {s: sum(1 for i in pool if stratum[i] == s) for s in want}
    partial = [got[s] for s in want if got[s] < sizes[s]]
    if partial:
        assert max(partial) - min(partial) <= 1
        assert all(sizes[s] <= min(partial) + 1 for s in want if got[s] == sizes[s])


def test_within_stratum_draw_is_seeded_and_varies_with_the_seed():
    table, aum, _ = planted_table()
    a = select(table, "ccs", 0.3, seed=0)
    np.testing.assert_array_equal(a, select(table, "ccs", 0.3, seed=0))
    assert not np.array_equal(a, select(table, "ccs", 0.3, seed=1))


def test_registry_help_names_aum_and_the_variant():
    entry = {e.name: e for e in SELECTORS.entries()}["ccs"]
    assert "AUM" in entry.help and "score=aign" in entry.help
