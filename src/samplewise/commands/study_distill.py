"""``samplewise study distill``: the adversarial distillation study."""

from __future__ import annotations

import argparse

from .study_common import add_study_arguments, run_study

HELP = ("Adversarial distillation study: teachers (given or trained by the study) x methods x "
        "seeds; student robustness against teacher robustness and TAS.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``samplewise study distill``: those of every study."""
    add_study_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Run (or with ``--report`` only report) the study, print its summary."""
    from ..studies.distill import run_distill_study
    return run_study(args, run_distill_study)
