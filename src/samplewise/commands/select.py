"""``samplewise select``: pick a coreset from a score file."""

from __future__ import annotations

import argparse
import json

from ..errors import SamplewiseError

HELP = "select a coreset (easycore, random, el2n, ccs, ...) from a score file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scores", required=True, help="scores.npz from samplewise score")
    p.add_argument("--method", required=True, help="selector (samplewise list shows them)")
    p.add_argument("--fraction", required=True, type=float, help="share to keep, in (0, 1]")
    p.add_argument("--class-balanced", action="store_true")
    p.add_argument("--dataset", help="check the score file belongs to this dataset")
    p.add_argument("--score", help="score ccs stratifies by (default aum, as published; "
                                   "aign: the AIGN-stratified variant)")
    p.add_argument("--window", help="AIGN epoch window START:STOP for easycore/hardcore")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="subset .npy (a .json summary goes beside it)")


def _window(text: str | None) -> dict:
    if text is None:
        return {}
    start, sep, stop = text.partition(":")
    try:
        return {"window": (int(start), int(stop))} if sep else {}
    except ValueError:
        raise SamplewiseError(f"--window takes START:STOP epochs, got '{text}'") from None


def run(a) -> int:
    from ..coreset import select, summarize_selection
    from ..data import load_dataset
    from ..formats.scores import ScoreTable
    from ..formats.subset import write_subset
    table = ScoreTable.load(a.scores)
    if a.dataset:
        bundle = load_dataset(a.dataset)
        table.check_dataset(bundle.fingerprint, a.dataset)
    if a.window and ":" not in a.window:
        raise SamplewiseError(f"--window takes START:STOP epochs, got '{a.window}'")
    idx = select(table, a.method, a.fraction, class_balanced=a.class_balanced, seed=a.seed,
                 score=a.score, **_window(a.window))
    summary = summarize_selection(table, idx)
    summary.update({"method": a.method, "class_balanced": a.class_balanced, "seed": a.seed})
    write_subset(a.out, idx, summary)
    print(json.dumps({k: summary[k] for k in ("method", "size", "fraction", "class_histogram",
                                               "dataset")}, indent=2))
    return 0
