"""``SubcommandGroup``: a command whose sub-subcommands live in a registry (``samplewise study
<name>``, ``samplewise analyze <name>``), so another module can add its own."""

from __future__ import annotations

import argparse
from typing import Callable

from ..errors import SamplewiseError

Handler = tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _help(fn: Callable) -> str:
    """The first paragraph of ``fn``'s docstring on one line: the sub-subcommand's help."""
    return (fn.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")


class SubcommandGroup:
    """Sub-subcommands kept in ``entries`` (name -> ``(add_arguments, run)``).

    Args:
        dest: the argparse attribute that holds the chosen name (e.g. ``"study"``).
        noun: what the user must name, for the error without one (e.g. ``"a study"``).
        entries: the registry, shared with the owning module (which exposes it).
    """

    def __init__(self, dest: str, noun: str, entries: dict[str, Handler]):
        self.dest, self.noun, self.entries = dest, noun, entries

    def register(self, name: str, add_args: Callable, run_fn: Callable) -> None:
        """Add a sub-subcommand; the first docstring paragraph of ``run_fn`` is its help."""
        self.entries[name] = (add_args, run_fn)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """One sub-subcommand per registered entry."""
        sub = parser.add_subparsers(dest=self.dest, metavar=self.dest.upper(),
                                    parser_class=type(parser))
        for name, (add, run_fn) in self.entries.items():
            add(sub.add_parser(name, help=_help(run_fn), description=_help(run_fn)))

    def run(self, args: argparse.Namespace) -> int:
        name = getattr(args, self.dest, None)
        if name is None:
            raise SamplewiseError(f"name {self.noun}: {', '.join(self.entries)}")
        return self.entries[name][1](args)
