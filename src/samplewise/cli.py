"""Command-line interface: parse, build a config, call the library, print.

A :class:`~samplewise.errors.SamplewiseError` (a user mistake) becomes one line on stderr and
exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable

from .cpu import tune_allocator
from .errors import SamplewiseError
from .preemption import Preempted

COMMANDS: dict[str, Callable] = {}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2 (argparse prints usage + message otherwise)
        raise SamplewiseError(f"{self.prog}: {message}")


def command(name: str, help: str):
    def deco(fn):
        COMMANDS[name] = (fn, help)
        return fn
    return deco


def _common_train(p: argparse.ArgumentParser, distill: bool = False) -> None:
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


def _train_config(a):
    from .config import load_config
    keys = ("dataset", "model", "objective", "epochs", "batch_size", "lr", "eps", "alpha",
            "attack_steps", "subset", "train_size", "seed", "device", "teacher", "amp",
            "channels_last", "compile", "threads", "tensorboard")
    direct = {k: getattr(a, k, None) for k in keys}
    # distill's own default method, below --config and --set; recipe defaults (e.g. the
    # distillation weight decay) belong to the objective: samplewise.objectives.resolve_recipe
    defaults = {"objective": "saad"} if a.command == "distill" else None
    return load_config(path=a.config, overrides=a.set, defaults=defaults, **direct)


@command("train", "train a model (standard, pgd-at, trades, ...) and write a run directory")
def cmd_train(a) -> int:
    from .runs import run_training
    result = run_training(_train_config(a), a.out, resume=a.resume, overwrite=a.overwrite)
    print(json.dumps(result, indent=2))
    return 0


@command("distill", "distil a robust teacher into a student (ard, rslad, iad, adaad, igdm, saad, ...)")
def cmd_distill(a) -> int:
    from .runs import run_training
    result = run_training(_train_config(a), a.out, resume=a.resume, overwrite=a.overwrite)
    print(json.dumps(result, indent=2))
    return 0


@command("eval", "evaluate a saved model: clean, pgd, cw or autoattack")
def cmd_eval(a) -> int:
    from .data import load_dataset
    from .evaluate import evaluate
    from .models import load_model
    model = load_model(a.model, device=a.device)
    name = a.dataset or model.card.name
    bundle = load_dataset(name)
    if tuple(bundle.card.shape) != tuple(model.card.shape):
        raise SamplewiseError(f"model expects inputs of shape {tuple(model.card.shape)}, "
                              f"dataset {name} has {tuple(bundle.card.shape)}")
    from contextlib import nullcontext
    from pathlib import Path
    from .runlock import hold
    with hold(Path(a.state).parent) if a.state else nullcontext():  # one writer per state dir
        res = evaluate(model, bundle.test, attack=a.attack, eps=a.eps, alpha=a.alpha,
                       steps=a.steps, n=a.n, device=a.device, batch_size=a.batch_size,
                       per_sample=bool(a.per_sample), state_path=a.state)
    if a.per_sample:
        from . import io
        io.write_json(a.per_sample, res.pop("per_sample"))
        res["per_sample_file"] = a.per_sample
    print(json.dumps(res, indent=2))
    return 0


@command("list", "list every registered dataset, model, attack and objective")
def cmd_list(a) -> int:
    from .registry_index import registries
    for kind, reg in registries().items():
        print(f"{kind}:")
        for e in reg.entries():
            print(f"  {e.name + (':ARG' if e.prefix else ''):<22} {e.help}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .runinfo import __version__
    parser = _Parser(prog="samplewise", description="Data-centric adversarial robustness: "
                     "EasyCore coresets and SAAD adversarial distillation.")
    parser.add_argument("--version", action="version", version=f"samplewise {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    _module_commands()
    for name, (fn, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        ADD_ARGS.get(name, lambda p: None)(p)
    return parser


def _eval_args(p):
    p.add_argument("--model", required=True, help="model file or run directory")
    p.add_argument("--dataset", help="default: the dataset the model was trained on")
    p.add_argument("--attack", default="pgd", choices=["clean", "fgsm", "pgd", "cw", "autoattack"])
    p.add_argument("--eps", type=float), p.add_argument("--alpha", type=float)
    p.add_argument("--steps", type=int), p.add_argument("--n", type=int)
    p.add_argument("--batch-size", type=int, default=256), p.add_argument("--device", default="cpu")
    p.add_argument("--per-sample", metavar="FILE.json", help="save per-sample robust flags")
    p.add_argument("--state", metavar="FILE.json",
                   help="per-batch progress file: a killed evaluation resumes from it")


ADD_ARGS: dict[str, Callable] = {"train": _common_train, "distill": lambda p: _common_train(p, distill=True),
                                 "eval": _eval_args}

#: commands that live in their own module under samplewise.commands (add_arguments, run, HELP)
MODULE_COMMANDS = ("score", "select", "study", "analyze", "bench", "demo")


def _module_commands() -> None:
    import importlib
    import importlib.util
    for name in MODULE_COMMANDS:
        if name in COMMANDS or importlib.util.find_spec(f"samplewise.commands.{name}") is None:
            continue
        mod = importlib.import_module(f"samplewise.commands.{name}")
        COMMANDS[name] = (mod.run, getattr(mod, "HELP", (mod.__doc__ or name).strip().splitlines()[0]))
        ADD_ARGS[name] = mod.add_arguments


def main(argv: list[str] | None = None) -> int:
    tune_allocator()  # keep freed tensor memory in the process (samplewise.cpu; opt out by env)
    parser = build_parser()
    try:
        a = parser.parse_args(argv)
        logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO,
                            format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
        if a.command is None:
            parser.print_help()
            return 2
        return COMMANDS[a.command][0](a)
    except SamplewiseError as exc:
        print(f"samplewise: error: {exc}", file=sys.stderr)
        return 2
    except Preempted as exc:  # a checkpoint was saved: one line on how to continue
        print(f"samplewise: {exc}; resume with: {resume_command(argv, a)}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("samplewise: interrupted", file=sys.stderr)
        return 130


def resume_command(argv: list[str] | None, args: argparse.Namespace) -> str:
    """The command line that continues a stopped command: the same one, without
    ``--overwrite``, with ``--resume`` for the commands that take it (a study resumes by
    itself)."""
    import shlex
    words = [str(w) for w in (sys.argv[1:] if argv is None else argv) if w != "--overwrite"]
    if hasattr(args, "resume") and "--resume" not in words:
        words.append("--resume")
    return shlex.join(["samplewise", *words])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
