"""Command-line interface: the list of commands, the parser built from it, dispatch.

Each command is a module under :mod:`samplewise.commands` (``HELP``, ``add_arguments``, ``run``);
this module only lists them, parses, runs the chosen one and turns errors into exit statuses.

A :class:`~samplewise.errors.SamplewiseError` (a user mistake) becomes one line on stderr and
exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .commands import analyze, bench, demo, distill, score, select, study, train
from .commands import eval as eval_command
from .commands import list as list_command
from .commands.group import add_commands
from .cpu import tune_allocator
from .errors import SamplewiseError
from .preemption import Preempted

#: every command, in the order of ``samplewise --help``: name -> module exposing ``HELP``,
#: ``add_arguments(parser)`` and ``run(args)`` (``samplewise.commands.group``); a new command
#: is a new module under ``samplewise/commands/`` added here
COMMANDS = {"train": train, "distill": distill, "eval": eval_command, "list": list_command,
            "score": score, "select": select, "study": study, "analyze": analyze,
            "bench": bench, "demo": demo}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2 (argparse prints usage + message otherwise)
        raise SamplewiseError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__
    parser = _Parser(prog="samplewise", description="Data-centric adversarial robustness: "
                     "EasyCore coresets and SAAD adversarial distillation.")
    parser.add_argument("--version", action="version", version=f"samplewise {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    add_commands(parser, COMMANDS, dest="command")
    return parser


def main(argv: list[str] | None = None) -> int:
    tune_allocator()  # keep freed tensor memory in the process (samplewise.cpu; opt out by env)
    parser = build_parser()
    try:
        a = parser.parse_args(argv)
        logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO,
                            format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
        if a.command is None:
            parser.print_help()
            return 2
        status = COMMANDS[a.command].run(a)
        sys.stdout.flush()  # a closed pipe is found here, not at interpreter exit
        return status
    except SamplewiseError as exc:
        print(f"samplewise: error: {exc}", file=sys.stderr)
        return 2
    except Preempted as exc:  # a checkpoint was saved: one line on how to continue
        print(f"samplewise: {exc}; resume with: {resume_command(argv, a)}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("samplewise: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`samplewise ... | head`): stop quietly
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141  # 128 + SIGPIPE, as a shell reports it
    finally:
        leave_process_group()


def leave_process_group() -> None:
    """Leave a ``torchrun`` process group, if this command joined one. A gloo group still alive
    at interpreter exit can abort the process ("terminate called without an active exception")
    after its work is done; destroying it first makes the exit clean. Looked up in
    ``sys.modules`` so that a command that never touched torch does not import it here."""
    dist = sys.modules.get("samplewise.distributed")
    if dist is not None:
        dist.cleanup()


def resume_command(argv: list[str] | None, args: argparse.Namespace) -> str:
    """The command line that continues a stopped command: the same one, without
    ``--overwrite``, with ``--resume`` for the commands that take it (a study resumes by
    itself)."""
    import shlex
    words = [str(w) for w in (sys.argv[1:] if argv is None else argv) if w != "--overwrite"]
    if hasattr(args, "resume") and "--resume" not in words:
        words.append("--resume")
    return shlex.join(["samplewise", *words])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
