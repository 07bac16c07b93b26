"""``samplewise list``: every registered dataset, model, attack, objective, ... with its help."""

from __future__ import annotations

import argparse

HELP = "list every registered dataset, model, attack and objective"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``samplewise list`` takes no options."""


def run(args: argparse.Namespace) -> int:
    """Print each registry's names and help lines."""
    from ..registry_index import registries

    for kind, reg in registries().items():
        print(f"{kind}:")
        for e in reg.entries():
            print(f"  {e.name + (':ARG' if e.prefix else ''):<22} {e.help}")
    return 0
