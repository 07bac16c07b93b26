"""``samplewise analyze <name>``: analyses of trained models against per-sample scores.

Each analysis is a command module of its own (``HELP``, ``add_arguments``, ``run``), listed by
name in :data:`SUBCOMMANDS`; a new analysis is a new module added there.

Example:
    $ samplewise analyze vulnerability --scores runs/scores/scores.npz --n 2000 --out runs/vuln
    $ samplewise analyze atlas --scores runs/scores/scores.npz --out runs/atlas
"""

from __future__ import annotations

import argparse

from . import analyze_atlas, analyze_transfer, analyze_vulnerability
from .group import add_commands, run_command

HELP = "``samplewise analyze <name>``: analyses of trained models against per-sample scores."

#: ``samplewise analyze <name>`` -> its command module
SUBCOMMANDS = {"vulnerability": analyze_vulnerability, "atlas": analyze_atlas,
               "transfer": analyze_transfer}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One subcommand per analysis."""
    add_commands(p, SUBCOMMANDS, dest="analysis", metavar="ANALYSIS")


def run(args: argparse.Namespace) -> int | None:
    """Run the chosen analysis."""
    return run_command(args, SUBCOMMANDS, dest="analysis", noun="an analysis")


__all__ = ["HELP", "SUBCOMMANDS", "add_arguments", "run"]
