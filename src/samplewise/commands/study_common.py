"""What every ``samplewise study <name>`` shares: the options, the ``--cells`` check and the
printed summary of a finished study."""

from __future__ import annotations

import argparse

from ..errors import SamplewiseError


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    """Options every study takes."""
    p.add_argument("--config", required=True,
                   help="study YAML (study, base, grid, seeds, eval, ...)")
    p.add_argument("--out", required=True, help="study directory (cells/, results.*, plots)")
    p.add_argument("--cells", metavar="i/n", help="run only the i-th of n shares of the cells "
                   "(1-based, round-robin over the sorted ids of the cells the ledger does not "
                   "hold; for SLURM job arrays); a "
                   "rerun without it runs what is left and merges every finished cell. Workers "
                   "running the same command share its cells (each claims the next free "
                   "unfinished one)")
    p.add_argument("--device", help="override the config's device")
    p.add_argument("--ledger", metavar="FILE",
                   help="a JSON file of finished cells that moves with the study from machine to "
                        "machine (commit it): the cells it holds are not run again (checked "
                        "against the config), the cells finished here are added to it")
    p.add_argument("--report", action="store_true",
                   help="run nothing: write the tables and plots of the cells finished so far "
                        "(the progress of a study whose shares are still running)")


def cells_share(args: argparse.Namespace) -> str | None:
    """The ``--cells`` share; with ``--report`` (which covers the whole study) it must be unset."""
    if getattr(args, "report", False) and args.cells:
        raise SamplewiseError("--report writes the whole study's progress: drop --cells")
    return args.cells


def print_summary(res: dict) -> int:
    """Print a finished study's summary; status 1 if any cell failed."""
    print(f"{res['cells_finished']}/{res['cells_total']} cells finished"
          + (f"; missing: {', '.join(res['missing'])}" if res["missing"] else ""))
    for path in res["results"] + res["plots"]:
        print(path)
    for cell in res["failed"]:
        print(f"failed: {cell}: {res['ran'][cell][len('failed: '):]}")
    return 1 if res["failed"] else 0


def run_study(args: argparse.Namespace, runner) -> int:
    """Run (or with ``--report`` only report) a study with ``runner(config, out, cells=,
    device=, report_only=, ledger=)`` and print its summary."""
    res = runner(args.config, args.out, cells=cells_share(args), device=args.device,
                 report_only=args.report, ledger=args.ledger)
    return print_summary(res)
