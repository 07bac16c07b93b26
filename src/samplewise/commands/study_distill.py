"""``samplewise study distill``: the adversarial distillation study."""

from __future__ import annotations

import argparse

from ..errors import SamplewiseError
from .study_common import add_study_arguments, run_study

HELP = ("Adversarial distillation study: teachers (given or trained by the study) x methods x "
        "seeds; student robustness against teacher robustness and TAS.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``samplewise study distill``: those of every study, and ``--teachers``."""
    add_study_arguments(p)
    p.add_argument("--teachers", action="store_true",
                   help="train (or restore from --ledger) and evaluate the teachers only, no "
                        "student: the first phase of a study split over jobs or machines")


def run(args: argparse.Namespace) -> int:
    """Run (or with ``--report`` only report) the study, print its summary."""
    from ..studies.distill import run_distill_study
    if args.teachers and (args.report or args.cells):
        raise SamplewiseError("--teachers trains the study's teachers: drop "
                              + ("--report" if args.report else "--cells"))
    if not args.teachers:
        return run_study(args, run_distill_study)
    res = run_distill_study(args.config, args.out, device=args.device, ledger=args.ledger,
                            teachers_only=True)
    return print_teachers(res["teachers"])


def print_teachers(evals: dict) -> int:
    """One line per teacher: its clean / PGD / AutoAttack accuracy, or that it is not ready
    (another worker is still training it)."""
    from ..studies.tables import pct
    for name, te in evals.items():
        if te is None:
            print(f"{name:<24}not ready (another worker is training it)")
            continue
        print(f"{name:<24}clean {pct(te.get('clean_acc'), 1)}  PGD {pct(te.get('pgd_acc'), 1)}"
              f"  AutoAttack {pct(te.get('autoattack_acc'), 1)}")
    return 0
