"""``samplewise analyze atlas``: each class's easiest and hardest samples, and a data map."""

from __future__ import annotations

import argparse

HELP = ("Image grids of each class's easiest and hardest samples, a data map (confidence against "
        "variability over epochs, coloured by AIGN) and atlas.md with a short reading.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``samplewise analyze atlas``."""
    p.add_argument("--scores", required=True, help="score file (DIR/scores.npz)")
    p.add_argument("--score", default="aign", help="score that orders the grids and the 10%% "
                   "class mix (default aign; any score in the file)")
    p.add_argument("--k", type=int, default=8, help="easiest and hardest samples shown per "
                   "class (default 8)")
    p.add_argument("--dataset", help="default: the dataset named in the score file (its "
                   "fingerprint must match)")
    p.add_argument("--out", required=True, help="output directory")


def run(a: argparse.Namespace) -> int:
    """Draw the atlas, print the files written."""
    from ..atlas import atlas, write_atlas

    res = atlas(a.scores, score=a.score, k=a.k, dataset=a.dataset)
    if res["datamap"] is None:
        print("note: the score file has no per-epoch true-class probabilities; no data map")
    for path in write_atlas(res, a.out):
        print(path)
    return 0
