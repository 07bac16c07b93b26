"""Item 6: coreset selection on 1.28 million synthetic scores and the memory of an ImageNet-sized
score matrix."""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from .core import BenchPlan, Row, SCORE_SELECTORS, BenchContext, interleaved, paired_ratio


log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- 6. selection
def synthetic_table(n: int, feature_dim: int, classes: int = 1000, seed: int = 0):
    """A score table of ``n`` samples with every score and float16 features (ImageNet-sized)."""
    from ..formats.scores import SCORE_NAMES, ScoreTable
    rng = np.random.default_rng(seed)
    scores = {s: rng.random(n, dtype=np.float32) for s in SCORE_NAMES}
    scores["forgetting"] = rng.integers(0, 20, n).astype(np.float32)
    feats = np.empty((n, feature_dim), dtype=np.float16)
    for s in range(0, n, 1 << 16):
        feats[s:s + (1 << 16)] = rng.standard_normal((min(1 << 16, n - s), feature_dim), np.float32)
    return ScoreTable(index=np.arange(n), labels=rng.integers(0, classes, n), scores=scores,
                      features=feats, meta={"dataset": "synthetic", "num_train": n})


def bench_selection(ctx: BenchContext) -> list[Row]:
    """Seconds of :func:`samplewise.coreset.select` per selector on ``selection_n`` scores."""
    from ..coreset import SELECTORS, select
    p = ctx.plan
    t0 = time.perf_counter()
    table = synthetic_table(p.selection_n, p.feature_dim)
    log.info("bench: synthetic score table of %d samples built in %.1f s", p.selection_n,
             time.perf_counter() - t0)
    n, frac, reps = p.selection_n, p.selection_fraction, p.slow_repeats
    rows = []

    def timed(method: str, repeats: int = reps, **kw) -> float:
        return statistics.median(interleaved({"s": lambda: select(table, method, frac, **kw)},
                                             repeats)["s"])

    for method in SELECTORS.names():
        measure = f"seconds to select {frac:g} of {n:,} scores"
        if method == "kcenter":
            rows.append(Row(f"select {method}", None, None, None, "s", measure, ("<=", 1.0),
                            f"skipped: greedy k-center is O(N k D) = {n:,} x {int(n * frac):,} x "
                            f"{p.feature_dim} distance terms, hours on a CPU at this N", skipped=True,
                            absolute=True))
        elif method in SCORE_SELECTORS:
            rows.append(Row(f"select {method}", timed(method), None, None, "s", measure, ("<=", 1.0),
                            f"absolute seconds, median of {reps}; no reference", absolute=True))
        elif method == "moderate":
            rows.append(Row(f"select {method}", timed(method, 1), None, None, "s",
                            f"{measure}, D={p.feature_dim} float16 features", ("<=", 10.0),
                            "absolute seconds, one run; no reference", absolute=True))
        else:
            rows.append(Row(f"select {method}", None, None, None, "s", measure, None,
                            "skipped: not a selector this bench knows the cost of", skipped=True))
    rows.append(Row("select easycore class-balanced", timed("easycore", 1, class_balanced=True),
                    None, None, "s", f"seconds to select {frac:g} of {n:,} scores in 1000 classes",
                    None, "absolute seconds, one run; no reference", absolute=True))
    del table
    rows += _matrix_rows(p)
    return rows


def _matrix_rows(p: BenchPlan) -> list[Row]:
    """Memory of an N x E per-epoch score matrix: float16 vs float32, and a memory-mapped .npy."""
    from numpy.lib.format import open_memmap
    n, e = p.selection_n, p.selection_epochs
    shape = f"{n:,} x {e} epochs"
    rows = [Row("score matrix bytes", n * e * 2, n * e * 4, 0.5, "bytes",
                f"float16 / float32 bytes of a {shape} AIGN matrix", None,
                "float16 keeps 11 significant bits (relative error <= 4.9e-4)")]
    rng = np.random.default_rng(0)
    chunk = 1 << 16
    mem = np.empty((n, e), dtype=np.float16)
    for s in range(0, n, chunk):
        mem[s:s + chunk] = rng.random((min(chunk, n - s), e), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="samplewise-bench-") as tmp:
        path = Path(tmp) / "aign_per_epoch.npy"
        t0 = time.perf_counter()
        mm = open_memmap(path, mode="w+", dtype=np.float16, shape=(n, e))
        for s in range(0, n, chunk):
            mm[s:s + chunk] = mem[s:s + chunk]
        mm.flush()
        write_s = time.perf_counter() - t0
        size = path.stat().st_size
        del mm
        mm = np.load(path, mmap_mode="r")
        window = slice(max(0, e - 10), e)

        def window_mean(a):
            out = np.empty(n, dtype=np.float32)
            for s in range(0, n, chunk):
                out[s:s + chunk] = a[s:s + chunk, window].astype(np.float32).mean(1)
            return out

        t = interleaved({"mm": lambda: window_mean(mm), "mem": lambda: window_mean(mem)},
                        p.slow_repeats)
        del mm
    rows.append(Row("score matrix memmap window mean", statistics.median(t["mm"]),
                    statistics.median(t["mem"]), paired_ratio(t["mm"], t["mem"]), "s",
                    f"mean over the last 10 epochs of a {shape} float16 matrix: memory-mapped .npy "
                    f"(numpy open_memmap) / in memory", None,
                    f"file {size:,} bytes, written in {write_s:.2f} s; pages come from the page "
                    "cache here (a cold read goes at disk speed)"))
    return rows


