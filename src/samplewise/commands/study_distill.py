"""``samplewise study distill``: the adversarial distillation study."""

from __future__ import annotations

import argparse
import functools

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
    return run_study(args, functools.partial(run_distill_study, teachers_only=args.teachers))
