"""``samplewise analyze <name>``: analyses of trained models against per-sample scores.

Analyses are sub-subcommands kept in :data:`ANALYSES` (name -> ``(add_arguments, run)``);
another module adds its own with :func:`register` (e.g. ``analyze transfer``).

Example:
    $ samplewise analyze vulnerability --scores runs/scores/scores.npz --n 2000 --out runs/vuln
    $ samplewise analyze atlas --scores runs/scores/scores.npz --out runs/atlas
"""

from __future__ import annotations

import argparse
from typing import Callable

from .group import Handler, SubcommandGroup


def _vulnerability_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scores", required=True, help="score file (DIR/scores.npz)")
    p.add_argument("--model", help="model file or run directory; default: the scoring run's "
                   "model.pt next to the score file (the natural choice: the model the scores "
                   "describe); a model trained on the full data is the other natural check")
    p.add_argument("--dataset", help="default: the dataset named in the score file (its "
                   "fingerprint must match)")
    p.add_argument("--eps", type=float, help="radius of the PGD success test (default: the card's)")
    p.add_argument("--steps", type=int, default=20, help="PGD steps at every eps (default 20)")
    p.add_argument("--n", type=int, help="analyse a seeded stratified sample of N scored samples")
    p.add_argument("--tol", type=float, default=1e-3, help="bisection resolution (default 1e-3)")
    p.add_argument("--max-eps", type=float, help="bisection bound (default min(4 eps, 1))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="output directory")


def _vulnerability_run(a: argparse.Namespace) -> int:
    """Per-sample PGD vulnerability (success at eps, smallest breaking eps by bisection) of the
    scored training samples, and its Spearman correlation with AIGN."""
    from ..analysis import load_for_scores, vulnerability, write_vulnerability

    model, bundle, table = load_for_scores(a.scores, a.model, dataset=a.dataset, device=a.device)
    res = vulnerability(model, bundle, table, eps=a.eps, steps=a.steps, n=a.n, tol=a.tol,
                        max_eps=a.max_eps, batch_size=a.batch_size, seed=a.seed, device=a.device)
    s = res["settings"]
    print(f"{s['n']} training samples, eps={s['eps']:g}: clean {100 * res['clean_acc']:.2f}%, "
          f"PGD-{s['steps']} {100 * res['robust_acc']:.2f}%, mean radius {res['mean_radius']:.4f} "
          f"({res['censored']} censored at {s['max_eps']:g})")
    for key in ("aign_radius", "aign_success"):
        sp = res["spearman"][key]
        rho = sp.get("note", "undefined") if sp["rho"] is None else \
            f"{sp['rho']:+.3f} (p={sp['p']:.2g})"
        print(f"spearman {key.replace('_', ' vs ')}: {rho}")
    for path in write_vulnerability(res, a.out):
        print(path)
    return 0


def _atlas_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scores", required=True, help="score file (DIR/scores.npz)")
    p.add_argument("--score", default="aign", help="score that orders the grids and the 10%% "
                   "class mix (default aign; any score in the file)")
    p.add_argument("--k", type=int, default=8, help="easiest and hardest samples shown per "
                   "class (default 8)")
    p.add_argument("--dataset", help="default: the dataset named in the score file (its "
                   "fingerprint must match)")
    p.add_argument("--out", required=True, help="output directory")


def _atlas_run(a: argparse.Namespace) -> int:
    """Image grids of each class's easiest and hardest samples, a data map (confidence against
    variability over epochs, coloured by AIGN) and atlas.md with a short reading."""
    from ..atlas import atlas, write_atlas

    res = atlas(a.scores, score=a.score, k=a.k, dataset=a.dataset)
    if res["datamap"] is None:
        print("note: the score file has no per-epoch true-class probabilities; no data map")
    for path in write_atlas(res, a.out):
        print(path)
    return 0


def _transfer_entry() -> tuple[Callable, Callable]:
    from . import analyze_transfer
    return analyze_transfer.add_arguments, analyze_transfer.run


ANALYSES: dict[str, Handler] = {
    "vulnerability": (_vulnerability_args, _vulnerability_run),
    "atlas": (_atlas_args, _atlas_run),
    "transfer": _transfer_entry()}


_GROUP = SubcommandGroup("analysis", "an analysis", ANALYSES)
register = _GROUP.register          # add an analysis subcommand (``samplewise analyze <name>``)
add_arguments = _GROUP.add_arguments
run = _GROUP.run


__all__ = ["ANALYSES", "add_arguments", "register", "run"]
