"""One way to add a command (issue #13): every command is a module with ``HELP``,
``add_arguments(parser)`` and ``run(args)``, listed in ``cli.COMMANDS`` (and, one level down, in
the ``SUBCOMMANDS`` of ``study`` and ``analyze``); the parser has exactly those commands; the
choices of ``eval --attack`` are the attack registry's names."""

from __future__ import annotations

import argparse
import inspect
from types import ModuleType

import pytest

from samplewise.attacks import ATTACKS
from samplewise.cli import COMMANDS, build_parser, main
from samplewise.errors import SamplewiseError


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """``{name: subparser}`` of the parser's one subparsers action ({} without one)."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) <= 1
    return dict(actions[0].choices) if actions else {}


def _command_modules() -> list[tuple[str, ModuleType]]:
    """(path, module) of every command and subcommand module."""
    out = []
    for name, module in COMMANDS.items():
        out.append((name, module))
        out += [(f"{name} {sub}", m) for sub, m in getattr(module, "SUBCOMMANDS", {}).items()]
    return out


@pytest.mark.parametrize("path,module", _command_modules(), ids=[p for p, _ in _command_modules()])
def test_every_command_module_keeps_the_contract(path, module):
    assert isinstance(module, ModuleType) and module.__name__.startswith("samplewise.commands.")
    assert isinstance(module.HELP, str) and module.HELP.strip()
    for fn in (module.add_arguments, module.run):
        assert callable(fn) and len(inspect.signature(fn).parameters) == 1, (path, fn)


def test_the_parser_has_exactly_the_listed_commands():
    parser = build_parser()
    subs = _subparsers(parser)
    assert list(subs) == list(COMMANDS)
    for name, module in COMMANDS.items():
        assert subs[name].description == module.HELP
        nested = getattr(module, "SUBCOMMANDS", {})
        assert list(_subparsers(subs[name])) == list(nested)
        for sub, m in nested.items():
            assert _subparsers(subs[name])[sub].description == m.HELP
    assert set(COMMANDS) == {"train", "distill", "eval", "list", "score", "select", "study",
                             "analyze", "bench", "demo"}


def test_dispatch_reaches_the_chosen_module(monkeypatch):
    seen = []
    monkeypatch.setattr(COMMANDS["list"], "run", lambda a: seen.append(a.command) or 7)
    assert main(["--quiet", "list"]) == 7 and seen == ["list"]
    monkeypatch.setattr(COMMANDS["analyze"].SUBCOMMANDS["atlas"], "run",
                        lambda a: seen.append(a.analysis) or 5)
    assert main(["--quiet", "analyze", "atlas", "--scores", "s.npz", "--out", "o"]) == 5
    assert seen == ["list", "atlas"]


def test_a_group_without_a_name_is_one_line_and_status_2(capsys):
    assert main(["--quiet", "study"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["samplewise: error: name a study: coreset, distill"]


def _eval_choices() -> list[str]:
    eval_parser = _subparsers(build_parser())["eval"]
    (attack,) = [a for a in eval_parser._actions if a.dest == "attack"]
    return list(attack.choices)


def test_eval_attack_choices_are_the_registry():
    assert _eval_choices() == ATTACKS.names() and "clean" in _eval_choices()
    assert {"pgd", "fgsm", "cw", "autoattack"} <= set(_eval_choices())


def test_a_registered_attack_is_accepted_and_gone_after_unregister(capsys):
    name = "test-throwaway-attack"
    parse = lambda: build_parser().parse_args(["eval", "--model", "m.pt", "--attack", name])
    with pytest.raises(SamplewiseError, match="invalid choice"):
        parse()
    ATTACKS.register(name, help="returns its input")(lambda model, x, y, **kw: x)
    try:
        assert name in _eval_choices()
        assert parse().attack == name
    finally:
        ATTACKS.unregister(name)
    assert name not in _eval_choices()
    with pytest.raises(SamplewiseError, match="invalid choice"):
        parse()
    with pytest.raises(SamplewiseError, match="unknown attack"):
        ATTACKS.unregister(name)
