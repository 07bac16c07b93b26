"""The one way to add a command: a module with ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int | None``, listed by name in a mapping of commands.

The top level (``samplewise.cli.COMMANDS``) and the commands with subcommands (``study``,
``analyze``: their ``SUBCOMMANDS``) use the same two functions below: :func:`add_commands` adds
one subparser per listed module, :func:`run_command` calls the chosen module's ``run``.
"""

from __future__ import annotations

import argparse
from types import ModuleType
from typing import Mapping

from ..errors import SamplewiseError

#: what every command module exposes
CONTRACT = ("HELP", "add_arguments", "run")


def add_commands(parser: argparse.ArgumentParser, commands: Mapping[str, ModuleType], dest: str,
                 metavar: str | None = None) -> None:
    """One subparser of ``parser`` per ``name -> module`` of ``commands``, with the module's
    ``HELP`` as help and description and its ``add_arguments`` for the options; the chosen name
    goes to ``args.<dest>``."""
    sub = parser.add_subparsers(dest=dest, metavar=metavar, parser_class=type(parser))
    for name, module in commands.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))


def run_command(args: argparse.Namespace, commands: Mapping[str, ModuleType], dest: str,
                noun: str) -> int | None:
    """Run the module named by ``args.<dest>``; without a name, a :class:`SamplewiseError` that
    lists the choices (``name <noun>: a, b``)."""
    name = getattr(args, dest, None)
    if name is None:
        raise SamplewiseError(f"name {noun}: {', '.join(commands)}")
    return commands[name].run(args)
