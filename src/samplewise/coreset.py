"""Coreset selection over score files: one :func:`select`, one class-balancing path.

Every selector is a plain function ``(table, k, rng, **options) -> positions``: it receives a
:class:`~samplewise.formats.scores.ScoreTable` (the whole table, or one class of it when
``class_balanced=True``), the number ``k`` of samples to keep (``1 <= k <= len(table)``) and a
seeded ``numpy.random.Generator``, and returns ``k`` distinct positions into that table.
:func:`select` alone turns the fraction into ``k``, splits ``k`` across classes, checks what the
selector returned and maps positions to dataset indices. Scores are "higher = harder"
everywhere; each selector's registry entry says which end it keeps (``SELECTORS.entries()``,
``meta["keeps"]``). Ties are broken by dataset index (the lower index first), via :func:`rank`.

Adding a selector takes a few lines; its keyword options become ``select(..., option=value)``:

    >>> from samplewise.coreset import SELECTORS, rank
    >>> @SELECTORS.register("middle-el2n", help="keep the middle of the EL2N ranking",
    ...                     keeps="middle")
    ... def middle_el2n(table, k, rng, offset=0.5):
    ...     order = rank(table, table.get("el2n"))
    ...     start = min(int(offset * (len(table) - k)), len(table) - k)
    ...     return order[start:start + k]
    >>> subset = select(table, "middle-el2n", 0.3, class_balanced=True)

A selection is written and read as a subset file by :mod:`samplewise.formats.subset`.
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
import os
from typing import Callable

import numpy as np

from .errors import SamplewiseError
from .formats.scores import SCORE_NAMES, ScoreTable
from .formats.subset import check_indices
from .registry import Registry

log = logging.getLogger(__name__)

SELECTORS = Registry("selector")
_CHUNK_BYTES = 1 << 24       # temporary memory per distance chunk (k-center)
_FLOAT32_LIMIT = 1 << 29     # convert float16 features to float32 once when below this size


# ---------------------------------------------------------------------------- the one entry point
def subset_size(fraction: float, n: int) -> int:
    """``k = ceil(fraction * n)``, at least 1, at most ``n``.

    ``fraction * n`` is rounded to 6 decimals before the ceiling so that floating-point noise
    does not add a sample (``0.07 * 100`` is ``7.000000000000001`` and must give 7, not 8).

    Example:
        >>> subset_size(0.3, 1000), subset_size(0.01, 50), subset_size(1.0, 7)
        (300, 1, 7)
    """
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
        raise SamplewiseError(f"fraction must be a number in (0, 1], got {fraction!r}")
    f = float(fraction)
    if not 0.0 < f <= 1.0:  # also rejects NaN
        raise SamplewiseError(f"fraction must be in (0, 1], got {fraction!r}")
    return min(n, max(1, math.ceil(round(f * n, 6))))


def select(table: ScoreTable | str | os.PathLike | np.ndarray, method: str, fraction: float, *,
           class_balanced: bool = False, seed: int = 0, score: str | None = None,
           labels=None, **options) -> np.ndarray:
    """Pick a coreset: sorted unique dataset indices of ``ceil(fraction * N)`` samples.

    Args:
        table: a score table, the path of a score file, or a plain array of N scores (higher =
            harder; entry i is dataset index i), e.g. ``AIGNMeter.scores()``. An array serves the
            score-only selectors (easycore, hardcore, random, el2n, ..., ccs), which all rank by
            it; the selectors that need features (moderate, kcenter) need a score table.
        labels: with an array of scores, the class of each sample (for ``class_balanced``).
        method: a registered selector (``SELECTORS.names()``): easycore, hardcore, random,
            el2n, grand, forgetting, aum, loss, ccs, moderate, kcenter, ...
        fraction: share of the N scored samples to keep, in (0, 1]; see :func:`subset_size`.
        class_balanced: split the budget across classes in proportion to their sizes
            (largest-remainder rounding: the total is exactly k, each class gets its
            proportional share rounded down or up) and run the selector inside each class.
        seed: seeds the random generator handed to the selector (per class: ``(seed, class)``).
        score: the score a score-generic selector ranks by (e.g. ``ccs``); passed as an option.
        **options: selector options, e.g. ``keep="easiest"``, ``window=(0, 10)``, ``beta=0.2``.

    Returns:
        int64 array of dataset indices (values of ``table.index``), sorted ascending.

    Example:
        >>> idx = select("scores.npz", "easycore", 0.3, class_balanced=True)
        >>> idx = select(table, "ccs", 0.1, score="el2n", beta=0.2)
    """
    if isinstance(table, (str, os.PathLike)):
        table = ScoreTable.load(table)
    elif not isinstance(table, ScoreTable):
        table = scores_table(table, method, labels, class_balanced)
    elif labels is not None:
        raise SamplewiseError("labels= goes with a plain array of scores; a score table has its "
                              "own labels")
    fn = SELECTORS.get(method)
    n = len(table)
    if n == 0:
        raise SamplewiseError("cannot select from an empty score table")
    k = subset_size(fraction, n)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise SamplewiseError(f"seed must be a non-negative integer, got {seed!r}")
    if score is not None:
        options["score"] = score
    _check_options(method, fn, options)
    if n > 1 and not (table.index[1:] > table.index[:-1]).all():
        table = table.take(np.argsort(table.index))  # positions now follow dataset indices
    if class_balanced:
        parts = []
        for label, members, quota in class_quotas(table.labels, k):
            if quota:
                rng = np.random.default_rng([int(seed), int(label)])
                sub = table.take(members)
                parts.append(members[_run(method, fn, sub, quota, rng, options)])
        positions = np.concatenate(parts)
    else:
        positions = _run(method, fn, table, k, np.random.default_rng(int(seed)), options)
    out = np.sort(table.index[positions])
    log.info("selected %d of %d samples with %s%s", k, n, method,
             " (class-balanced)" if class_balanced else "")
    return out


def scores_table(scores, method: str, labels=None, class_balanced: bool = False) -> ScoreTable:
    """A score table over a plain array of scores: index ``0..N-1``, every score name the array.

    Each score-only selector ranks by the array whatever score it would read (``aign`` for
    easycore, ``el2n`` for el2n, ``score=`` for ccs). Refuses selectors that need features.

    Example:
        >>> scores_table(np.array([0.3, 0.1]), "easycore").get("aign")
        array([0.3, 0.1], dtype=float32)
    """
    entry = next((e for e in SELECTORS.entries() if e.name == method), None)
    if entry is not None and entry.meta.get("needs") == "features":
        raise SamplewiseError(f"selector '{method}' needs penultimate features, not only scores: "
                              "pass a score table (samplewise score writes them), not an array")
    if class_balanced and labels is None:
        raise SamplewiseError("class_balanced selection from an array of scores needs labels=")
    values = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores)
    if values.ndim != 1 or values.dtype.kind not in "iuf":
        raise SamplewiseError(f"scores must be a 1-D array of numbers (one per dataset index), "
                              f"got shape {values.shape}, dtype {values.dtype}")
    if not np.isfinite(values).all():
        raise SamplewiseError(f"scores hold {int((~np.isfinite(values)).sum())} NaN or infinite "
                              "values (samples never scored?); select among the scored ones "
                              "with a score table (AIGNMeter.to_table)")
    n = len(values)
    lab = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(
        labels.cpu() if hasattr(labels, "cpu") else labels)
    if lab.shape != (n,):
        raise SamplewiseError(f"labels must have one class per score ({n}), got shape {lab.shape}")
    return ScoreTable(index=np.arange(n), labels=lab,
                      scores={name: values for name in SCORE_NAMES}, meta={"num_train": n})


def list_selectors() -> dict[str, str]:
    """Selector name -> one-line help (which end of the scores it keeps)."""
    return {e.name: e.help for e in SELECTORS.entries()}


def class_quotas(labels: np.ndarray, k: int) -> list[tuple[int, np.ndarray, int]]:
    """Split ``k`` across classes proportionally to their sizes (largest remainder).

    Returns ``(label, positions, quota)`` per class, in label order. Integer arithmetic:
    ``quota_c = floor(k n_c / N)`` plus one for the classes with the largest remainders
    (ties: lower label first), so the quotas sum to ``k`` and never exceed ``n_c``.

    Example:
        >>> [q for _, _, q in class_quotas(np.array([0, 0, 0, 1, 1, 2]), 3)]
        [2, 1, 0]
    """
    n = len(labels)
    classes, groups = class_groups(labels)
    counts = np.array([len(g) for g in groups], dtype=np.int64)
    quota = (k * counts) // n
    remainder = (k * counts) % n
    extra = k - int(quota.sum())
    quota[np.lexsort((classes, -remainder))[:extra]] += 1
    return [(int(c), g, int(q)) for c, g, q in zip(classes, groups, quota)]


def class_groups(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sorted class labels and, for each, the ascending positions of its members.

    Example:
        >>> class_groups(np.array([1, 0, 1]))
        (array([0, 1]), [array([1]), array([0, 2])])
    """
    classes, counts = np.unique(labels, return_counts=True)
    order = np.argsort(labels, kind="stable")
    return classes, np.split(order, np.cumsum(counts)[:-1])


def rank(table: ScoreTable, values: np.ndarray, descending: bool = False) -> np.ndarray:
    """Positions ordered by ``values`` (ascending, or descending), ties by dataset index.

    Example:
        >>> easiest_first = rank(table, table.get("aign"))
    """
    values = np.asarray(values, dtype=np.float64)  # exact for float32; no unsigned wrap-around
    return np.lexsort((table.index, -values if descending else values))


def _check_options(method: str, fn: Callable, options: dict) -> None:
    params = list(inspect.signature(fn).parameters.values())[3:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    allowed = [p.name for p in params]
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise SamplewiseError(f"selector '{method}' does not take option(s) {', '.join(bad)}; "
                              f"its options: {', '.join(allowed) or 'none'}")


def _run(method: str, fn: Callable, table: ScoreTable, k: int, rng, options: dict) -> np.ndarray:
    """Call a selector and check its answer: ``k`` distinct in-range integer positions."""
    pos = np.asarray(fn(table, k, rng, **options))
    if pos.ndim != 1 or (pos.size and pos.dtype.kind not in "iu"):
        raise SamplewiseError(f"selector '{method}' must return a 1-D array of integer positions")
    pos = pos.astype(np.int64)
    in_range = k == 0 or (pos.min() >= 0 and pos.max() < len(table))
    if len(pos) != k or len(np.unique(pos)) != k or not in_range:
        raise SamplewiseError(f"selector '{method}' returned {len(pos)} positions; expected {k} "
                              f"distinct positions in [0, {len(table)})")
    return pos


# ---------------------------------------------------------------------------- score selectors
def _keep_end(table: ScoreTable, values: np.ndarray, k: int, keep: str) -> np.ndarray:
    if keep not in ("hardest", "easiest"):
        raise SamplewiseError(f"keep must be 'hardest' or 'easiest', got {keep!r}")
    return rank(table, values, descending=keep == "hardest")[:k]


def _aign(table: ScoreTable, window) -> np.ndarray:
    if window is None:
        return table.get("aign")
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise SamplewiseError(f"window must be (start, stop) epochs, got {window!r}")
    return table.aign_window(*window)


@SELECTORS.register("easycore", help="keep the lowest AIGN (easiest); option window=(start, stop)",
                    keeps="lowest")
def easycore(table: ScoreTable, k: int, rng, window=None) -> np.ndarray:
    """EasyCore: the ``k`` samples with the lowest average input-gradient norm."""
    return rank(table, _aign(table, window))[:k]


@SELECTORS.register("hardcore", help="keep the highest AIGN (hardest; EasyCore's opposite)",
                    keeps="highest")
def hardcore(table: ScoreTable, k: int, rng, window=None) -> np.ndarray:
    """The ablation opposite of EasyCore: the ``k`` samples with the highest AIGN."""
    return rank(table, _aign(table, window), descending=True)[:k]


@SELECTORS.register("random", help="uniform without replacement", keeps="uniform")
def random_subset(table: ScoreTable, k: int, rng) -> np.ndarray:
    """``k`` positions drawn uniformly without replacement."""
    return rng.choice(len(table), size=k, replace=False)


def _score_selector(name: str) -> Callable:
    def selector(table: ScoreTable, k: int, rng, keep: str = "hardest") -> np.ndarray:
        return _keep_end(table, table.get(name), k, keep)

    selector.__name__ = selector.__qualname__ = name
    selector.__doc__ = f"Keep the hardest (highest '{name}') samples; keep='easiest' flips it."
    return selector


for _name, _source in [("el2n", "Paul et al. 2021"), ("grand", "Paul et al. 2021"),
                       ("forgetting", "Toneva et al. 2019"), ("aum", "Pleiss et al. 2020"),
                       ("loss", "cumulative training loss")]:
    SELECTORS.register(_name, help=f"keep the highest {_name} (hardest; {_source}); "
                                   "keep='easiest' flips", keeps="highest")(_score_selector(_name))


# ---------------------------------------------------------------------------- coverage selectors
@SELECTORS.register("ccs", help="coverage-centric (Zheng et al. 2023), by AUM as published: drop "
                                "the hardest beta, stratify the score range, fill strata from the "
                                "smallest up; score=aign for the AIGN-stratified variant",
                    keeps="coverage")
def ccs(table: ScoreTable, k: int, rng, score: str = "aum", beta: float = 0.1,
        strata: int = 50) -> np.ndarray:
    """Coverage-centric coreset selection (Zheng et al. 2023), by AUM unless told otherwise.

    Drops the ``floor(beta * N)`` hardest samples (fewer if that would leave less than ``k``),
    cuts the remaining score range into ``strata`` equal-width strata and fills the budget from
    the smallest non-empty stratum up, each taking ``min(size, remaining // strata_left)``
    samples drawn uniformly. The default score is AUM, as in the paper (which also publishes
    forgetting: ``score="forgetting"``). ``score="aign"`` gives the AIGN-stratified variant,
    which is not a published baseline.
    """
    if not (isinstance(beta, numbers.Real) and 0.0 <= beta < 1.0):
        raise SamplewiseError(f"ccs: beta must be in [0, 1), got {beta!r}")
    if isinstance(strata, bool) or not isinstance(strata, numbers.Integral) or strata < 1:
        raise SamplewiseError(f"ccs: strata must be a positive integer, got {strata!r}")
    values = table.get(score).astype(np.float64)
    n = len(table)
    drop = min(math.floor(beta * n + 1e-9), n - k)
    pool = np.sort(rank(table, values, descending=True)[drop:])
    if len(pool) == k:
        return pool
    v = values[pool]
    lo, hi = v.min(), v.max()
    bins = np.zeros(len(pool), dtype=np.int64)
    if hi > lo:
        bins = np.minimum(((v - lo) / (hi - lo) * strata).astype(np.int64), strata - 1)
    ids, counts = np.unique(bins, return_counts=True)
    members = np.split(pool[np.argsort(bins, kind="stable")], np.cumsum(counts)[:-1])
    chosen, budget = [], k
    for j, s in enumerate(np.lexsort((ids, counts))):  # smallest stratum first
        take = min(int(counts[s]), budget // (len(ids) - j))
        chosen.append(rng.choice(members[s], size=take, replace=False))
        budget -= take
    if budget:  # cannot happen: each step leaves enough room in the larger strata
        raise RuntimeError(f"ccs left {budget} of its budget unfilled")
    return np.concatenate(chosen)


def _features(table: ScoreTable, method: str) -> np.ndarray:
    if table.features is None:
        raise SamplewiseError(f"{method} needs penultimate features, but the score file has no "
                              "'features'; re-run `samplewise score` with features enabled")
    return table.features


@SELECTORS.register("moderate", help="moderate coreset (Xia et al. 2023): keep samples whose "
                                     "distance to their class median feature is nearest the "
                                     "median distance", keeps="median distance",
                    needs="features")
def moderate(table: ScoreTable, k: int, rng) -> np.ndarray:
    """Keep the ``k`` samples minimising ``|d - median(d)|``, ``d`` = feature distance to the
    sample's class median feature vector."""
    feats = _features(table, "moderate")
    dist = np.empty(len(table), dtype=np.float64)
    for members in class_groups(table.labels)[1]:
        f = feats[members].astype(np.float32)  # one class at a time bounds the memory
        dist[members] = np.linalg.norm(f - np.median(f, axis=0), axis=1)
    return rank(table, np.abs(dist - np.median(dist)))[:k]


def _sq_dist(x: np.ndarray, center: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances of the rows of ``x`` to ``center``, in row chunks."""
    rows = max(1, _CHUNK_BYTES // (4 * x.shape[1]))
    for s in range(0, len(x), rows):
        diff = x[s:s + rows].astype(np.float32, copy=False) - center
        np.einsum("ij,ij->i", diff, diff, out=out[s:s + rows])
    return out


@SELECTORS.register("kcenter", help="greedy k-center on penultimate features (Sener & Savarese "
                                    "2018)", keeps="coverage", needs="features")
def kcenter(table: ScoreTable, k: int, rng) -> np.ndarray:
    """Greedy k-center: start at a random sample, then repeatedly add the sample farthest from
    the chosen centers (a 2-approximation of the minimax radius). O(N k D) time, vectorised."""
    feats = _features(table, "kcenter")
    n = len(table)
    if k == n:
        return np.arange(n)
    x = feats.astype(np.float32) if feats.size * 4 <= _FLOAT32_LIMIT else feats
    centers = [int(rng.integers(n))]
    nearest = _sq_dist(x, x[centers[0]].astype(np.float32), np.empty(n, np.float32))
    scratch = np.empty(n, np.float32)
    nearest[centers[0]] = -1.0  # chosen: never picked again, even among duplicates
    for _ in range(k - 1):
        nxt = int(np.argmax(nearest))
        centers.append(nxt)
        np.minimum(nearest, _sq_dist(x, x[nxt].astype(np.float32), scratch), out=nearest)
        nearest[nxt] = -1.0
    return np.array(centers, dtype=np.int64)


def _positions_of(table: ScoreTable, indices) -> np.ndarray:
    indices = check_indices(indices)
    sorter = np.argsort(table.index)
    pos = sorter[np.minimum(np.searchsorted(table.index, indices, sorter=sorter),
                            max(len(table) - 1, 0))] if len(table) else indices[:0]
    missing = np.setdiff1d(indices, table.index[pos])
    if len(missing):
        raise SamplewiseError(f"{len(missing)} selected indices are not in the score table "
                              f"(e.g. {missing[0]})")
    return pos


def summarize_selection(table: ScoreTable, indices: np.ndarray) -> dict:
    """Size, fraction, class histogram and each score's mean inside vs outside the selection.

    Also records the source score file's dataset, fingerprint, ``num_train`` and meta, so a
    later ``train --subset`` can check the subset belongs to its training set.

    Example:
        >>> s = summarize_selection(table, select(table, "easycore", 0.3))
        >>> s["size"], s["scores"]["aign"]["inside"] < s["scores"]["aign"]["outside"]
    """
    pos = _positions_of(table, indices)
    inside = np.zeros(len(table), dtype=bool)
    inside[pos] = True
    classes, counts = np.unique(table.labels[inside], return_counts=True)
    mean = lambda v: float(v.astype(np.float64).mean()) if len(v) else None  # noqa: E731
    meta = dict(table.meta)
    return {
        "size": int(len(pos)),
        "fraction": len(pos) / len(table) if len(table) else 0.0,
        "num_scored": len(table),
        "class_histogram": {str(int(c)): int(n) for c, n in zip(classes, counts)},
        "scores": {name: {"inside": mean(v[inside]), "outside": mean(v[~inside])}
                   for name, v in ((s, table.get(s)) for s in table.names())},
        "dataset": meta.get("dataset"),
        "fingerprint": meta.get("fingerprint"),
        "num_train": meta.get("num_train"),
        "score_file": table.source,
        "score_meta": meta,
    }
