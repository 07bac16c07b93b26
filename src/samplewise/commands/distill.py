"""``samplewise distill``: distil a robust teacher into a student; the options and the run of
``samplewise train``, with ``--teacher``, ``--student`` and ``--method``.

Example:
    $ samplewise distill --teacher runs/at --student cnn-small --method saad --out runs/saad
"""

from __future__ import annotations

import argparse

from .train import add_training_arguments, train_and_print

HELP = "distil a robust teacher into a student (ard, rslad, iad, adaad, igdm, saad, ...)"

#: distill's own default method, below ``--config`` and ``--set``
DEFAULTS = {"objective": "saad"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``samplewise distill``."""
    add_training_arguments(p, distill=True)


def run(args: argparse.Namespace) -> int:
    """Distil, print the run's result as JSON."""
    return train_and_print(args, defaults=DEFAULTS)
