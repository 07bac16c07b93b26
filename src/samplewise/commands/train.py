"""``samplewise train``: train a model and write a run directory.

Example:
    $ samplewise train --dataset digits --model cnn-small --objective pgd-at --epochs 10 --out runs/at

``samplewise distill`` shares the options and the run below (:func:`add_training_arguments`,
:func:`train_and_print`).
"""

from __future__ import annotations

import argparse
import json

HELP = "train a model (standard, pgd-at, trades, ...) and write a run directory"


def add_training_arguments(p: argparse.ArgumentParser, distill: bool = False) -> None:
    """The options of ``train`` (and, with ``distill=True``, of ``distill``)."""
    p.add_argument("--config", help="YAML file of TrainConfig keys")
    p.add_argument("--dataset")
    if distill:
        p.add_argument("--teacher", required=True,
                       help="teacher: model file, run directory, or robustbench:ID")
        p.add_argument("--student", dest="model", help="student architecture (default cnn-small)")
        p.add_argument("--method", dest="objective", help="distillation method (default saad)")
    else:
        p.add_argument("--model"), p.add_argument("--objective")
    p.add_argument("--epochs", type=int), p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float), p.add_argument("--eps", type=float)
    p.add_argument("--alpha", type=float), p.add_argument("--steps", type=int, dest="attack_steps")
    p.add_argument("--subset", help=".npy of dataset indices (from samplewise select)")
    p.add_argument("--train-size", type=int, help="seeded stratified sample of the training set")
    p.add_argument("--seed", type=int), p.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--amp", choices=["bf16"], help="bf16 autocast of the training step")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory layout (default: on for conv nets on the CPU, off on CUDA)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="write every epoch's metrics (and SAAD's weights) to OUT/tb/ "
                   "(needs samplewise[tensorboard])")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="start again in a used --out")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override any config key (e.g. --set lr=0.05 model_args={width:2})")


def train_and_print(args: argparse.Namespace, defaults: dict | None = None) -> int:
    """Build the config (``defaults`` < ``--config`` < ``--set`` < flags), run it, print the
    result as JSON. Recipe defaults (e.g. the distillation weight decay) belong to the
    objective (``samplewise.objectives.resolve_recipe``), never to the command line."""
    from ..config import load_config
    from ..runs import run_training

    keys = ("dataset", "model", "objective", "epochs", "batch_size", "lr", "eps", "alpha",
            "attack_steps", "subset", "train_size", "seed", "device", "teacher", "amp",
            "channels_last", "compile", "threads", "tensorboard")
    direct = {k: getattr(args, k, None) for k in keys}
    cfg = load_config(path=args.config, overrides=args.set, defaults=defaults, **direct)
    result = run_training(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps(result, indent=2))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``samplewise train``."""
    add_training_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Train, print the run's result as JSON."""
    return train_and_print(args)
