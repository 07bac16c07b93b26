"""``samplewise study <name>``: grids of training runs -> tables and plots.

Each study is a command module of its own (``HELP``, ``add_arguments``, ``run``), listed by name
in :data:`SUBCOMMANDS`; a new study is a new module added there.

Example:
    $ samplewise study coreset --config configs/study-coreset-digits.yaml --out runs/study
    $ samplewise study coreset --config study.yaml --out runs/study --cells 3/8   # SLURM array

Any number of workers running the same command share the cells: each claims the next
unfinished cell that no other process holds (the cell directory's lock).
"""

from __future__ import annotations

import argparse

from . import study_coreset, study_distill
from .group import add_commands, run_command

HELP = "``samplewise study <name>``: grids of training runs -> tables and plots."

#: ``samplewise study <name>`` -> its command module
SUBCOMMANDS = {"coreset": study_coreset, "distill": study_distill}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One subcommand per study."""
    add_commands(p, SUBCOMMANDS, dest="study", metavar="STUDY")


def run(args: argparse.Namespace) -> int | None:
    """Run the chosen study."""
    return run_command(args, SUBCOMMANDS, dest="study", noun="a study")


__all__ = ["HELP", "SUBCOMMANDS", "add_arguments", "run"]
