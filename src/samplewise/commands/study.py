"""``samplewise study <name>``: grids of training runs -> tables and plots.

Studies are sub-subcommands kept in :data:`STUDIES` (name -> ``(add_arguments, run)``); another
module adds its own with :func:`register`, e.g. ``register("distill", add_args, run)``, before
the parser is built. The first docstring line of ``run`` is the subcommand's help.

Example:
    $ samplewise study coreset --config configs/study-coreset-digits.yaml --out runs/study
    $ samplewise study coreset --config study.yaml --out runs/study --cells 3/8   # SLURM array

Any number of workers running the same command share the cells: each claims the next
unfinished cell that no other process holds (the cell directory's lock).
"""

from __future__ import annotations

import argparse

from ..errors import SamplewiseError
from .group import Handler, SubcommandGroup


def _common(p: argparse.ArgumentParser) -> None:
    """Options every study takes."""
    p.add_argument("--config", required=True,
                   help="study YAML (study, base, grid, seeds, eval, ...)")
    p.add_argument("--out", required=True, help="study directory (cells/, results.*, plots)")
    p.add_argument("--cells", metavar="i/n", help="run only the i-th of n shares of the cells "
                   "(1-based, round-robin over the sorted cell ids; for SLURM job arrays); a "
                   "rerun without it runs what is left and merges every finished cell. Workers "
                   "running the same command share its cells (each claims the next free "
                   "unfinished one)")
    p.add_argument("--device", help="override the config's device")
    p.add_argument("--report", action="store_true",
                   help="run nothing: write the tables and plots of the cells finished so far "
                        "(the progress of a study whose shares are still running)")


def _cells(args: argparse.Namespace):
    """The ``--cells`` share; with ``--report`` (which covers the whole study) it must be unset."""
    if getattr(args, "report", False) and args.cells:
        raise SamplewiseError("--report writes the whole study's progress: drop --cells")
    return args.cells


def _report(res: dict) -> int:
    """Print a finished study's summary; status 1 if any cell failed."""
    print(f"{res['cells_finished']}/{res['cells_total']} cells finished"
          + (f"; missing: {', '.join(res['missing'])}" if res["missing"] else ""))
    for path in res["results"] + res["plots"]:
        print(path)
    for cell in res["failed"]:
        print(f"failed: {cell}: {res['ran'][cell][len('failed: '):]}")
    return 1 if res["failed"] else 0


def _coreset_args(p: argparse.ArgumentParser) -> None:
    _common(p)


def _coreset_run(args: argparse.Namespace) -> int:
    """EasyCore coreset study: one scoring run, subsets per selector x fraction, cells per
    objective x seed, plus full data."""
    from ..studies.coreset_study import run_coreset_study

    res = run_coreset_study(args.config, args.out, cells=_cells(args), device=args.device,
                            report_only=args.report)
    return _report(res)


def _distill_run(args: argparse.Namespace) -> int:
    """Adversarial distillation study: teachers (given or trained by the study) x methods x
    seeds; student robustness against teacher robustness and TAS."""
    from ..studies.distill import run_distill_study

    res = run_distill_study(args.config, args.out, cells=_cells(args), device=args.device,
                            report_only=args.report)
    return _report(res)


STUDIES: dict[str, Handler] = {"coreset": (_coreset_args, _coreset_run),
                               "distill": (_common, _distill_run)}


_GROUP = SubcommandGroup("study", "a study", STUDIES)
register = _GROUP.register          # add a study subcommand (``samplewise study <name>``)
add_arguments = _GROUP.add_arguments
run = _GROUP.run


__all__ = ["STUDIES", "add_arguments", "register", "run"]
