"""``samplewise study coreset``: the EasyCore coreset study."""

from __future__ import annotations

import argparse

from .study_common import add_study_arguments, cells_share, print_summary

HELP = ("EasyCore coreset study: one scoring run, subsets per selector x fraction, cells per "
        "objective x seed, plus full data.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``samplewise study coreset``: those of every study."""
    add_study_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Run (or with ``--report`` only report) the study, print its summary."""
    from ..studies.coreset_study import run_coreset_study

    res = run_coreset_study(args.config, args.out, cells=cells_share(args), device=args.device,
                            report_only=args.report)
    return print_summary(res)
