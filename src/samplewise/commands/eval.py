"""``samplewise eval``: clean or adversarial accuracy of a saved model, as JSON.

``--attack`` takes any name of the attack registry (``samplewise.attacks.ATTACKS``; ``clean`` is
one of them), read when the parser is built, so a registered attack is a choice without a change
here.

Example:
    $ samplewise eval --model runs/at --attack pgd --steps 20 --n 1000
"""

from __future__ import annotations

import argparse
import json

from ..errors import SamplewiseError

HELP = "evaluate a saved model: clean accuracy, or robust accuracy under any registered attack"


class AttackChoices:
    """Every registered attack (``clean`` included), in registration order, read from the
    registry each time argparse asks (checking ``--attack``, or printing ``eval --help``): the
    parser is built without loading torch, and an attack registered later is a valid choice."""

    def names(self) -> list[str]:
        from ..attacks import ATTACKS
        return ATTACKS.names(include_prefix=False)

    def __iter__(self):
        return iter(self.names())

    def __contains__(self, name) -> bool:
        return name in self.names()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``samplewise eval``."""
    p.add_argument("--model", required=True, help="model file or run directory")
    p.add_argument("--dataset", help="default: the dataset the model was trained on")
    p.add_argument("--attack", default="pgd", choices=AttackChoices(), metavar="ATTACK",
                   help="a registered attack: %(choices)s")
    p.add_argument("--eps", type=float), p.add_argument("--alpha", type=float)
    p.add_argument("--steps", type=int), p.add_argument("--n", type=int)
    p.add_argument("--batch-size", type=int, default=256), p.add_argument("--device", default="cpu")
    p.add_argument("--per-sample", metavar="FILE.json", help="save per-sample robust flags")
    p.add_argument("--state", metavar="FILE.json",
                   help="per-batch progress file: a killed evaluation resumes from it")


def run(a: argparse.Namespace) -> int:
    """Evaluate (one writer per ``--state`` folder), print the result as JSON."""
    from contextlib import nullcontext
    from pathlib import Path

    from .. import io
    from ..data import load_dataset
    from ..evaluate import evaluate
    from ..models import load_model
    from ..runlock import hold

    model = load_model(a.model, device=a.device)
    name = a.dataset or model.card.name
    bundle = load_dataset(name)
    if tuple(bundle.card.shape) != tuple(model.card.shape):
        raise SamplewiseError(f"model expects inputs of shape {tuple(model.card.shape)}, "
                              f"dataset {name} has {tuple(bundle.card.shape)}")
    with hold(Path(a.state).parent) if a.state else nullcontext():  # one writer per state dir
        res = evaluate(model, bundle.test, attack=a.attack, eps=a.eps, alpha=a.alpha,
                       steps=a.steps, n=a.n, device=a.device, batch_size=a.batch_size,
                       per_sample=bool(a.per_sample), state_path=a.state)
    if a.per_sample:
        io.write_json(a.per_sample, res.pop("per_sample"))
        res["per_sample_file"] = a.per_sample
    print(json.dumps(res, indent=2))
    return 0
