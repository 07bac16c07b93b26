"""``samplewise study coreset``: the EasyCore coreset study."""

from __future__ import annotations

import argparse

from .study_common import add_study_arguments, run_study

HELP = ("EasyCore coreset study: one scoring run, subsets per selector x fraction, cells per "
        "objective x seed, plus full data.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``samplewise study coreset``: those of every study."""
    add_study_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Run (or with ``--report`` only report) the study, print its summary."""
    from ..studies.coreset_study import run_coreset_study
    return run_study(args, run_coreset_study)
