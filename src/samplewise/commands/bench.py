"""``samplewise bench``: speed ratios measured side by side, printed as a table and saved as JSON.

Example:
    $ samplewise bench --json docs/bench.json
    $ samplewise bench --quick --json /tmp/bench.json
    $ samplewise bench --growth --plot docs/img/cost_growth.png --json docs/growth.json
"""

from __future__ import annotations

import argparse

HELP = "speed ratios measured side by side (table + JSON); --growth draws the cost growth"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``samplewise bench``."""
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and 1-2 repeats (seconds; checks the machinery, not the speed)")
    p.add_argument("--json", metavar="FILE", help="write the result (machine facts, plan, rows)")
    p.add_argument("--items", metavar="LIST",
                   help="comma-separated items: pgd, epoch, efficiency, aign, saad, selection, "
                   "fastpaths, all or none (default: all; with --growth: none)")
    p.add_argument("--growth", action="store_true",
                   help="measure how a pgd-at epoch grows with dataset size and PGD steps")
    p.add_argument("--plot", metavar="FILE.png", help="draw the growth (implies --growth)")
    p.add_argument("--repeats", type=int, help="repeats of the quick measurements: PGD, data path, "
                   "stem (median is reported)")
    p.add_argument("--aign-repeats", type=int, help="repeats of the AIGN overhead item (default 9)")
    p.add_argument("--slow-repeats", type=int, help="repeats of the efficiency and saad items")
    p.add_argument("--epoch-repeats", type=int, help="repeats of the pgd-at epoch item")
    p.add_argument("--epoch-size", type=int,
                   help="training samples of the pgd-at epoch item (default 4000 Fashion-MNIST)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    p.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    """Run the bench, print the table (and growth), write ``--json``."""
    from ..bench import format_growth, format_table, run_bench

    growth = bool(args.growth or args.plot)
    items = args.items if args.items is not None else ("none" if growth else "all")
    result = run_bench(quick=args.quick, items=items, growth=growth, device=args.device,
                       json_path=args.json, plot_path=args.plot, threads=args.threads,
                       repeats=args.repeats, slow_repeats=args.slow_repeats,
                       epoch_repeats=args.epoch_repeats, aign_repeats=args.aign_repeats,
                       epoch_size=args.epoch_size)
    if result["rows"]:
        print(format_table(result["rows"]))
        print("\nnotes:")
        for r in result["rows"]:
            print(f"  {r['name']}: {r['measure']}" + (f"; {r['notes']}" if r["notes"] else ""))
    if "growth" in result:
        print(format_growth(result["growth"]))
    m = result["machine"]
    print(f"torch {m['torch']}, {m['torch_threads']} threads, {m['cpu_count']} CPUs, "
          f"allocator {m.get('allocator', '?')}; "
          f"{result['seconds']:.0f} s" + (f" -> {args.json}" if args.json else ""))
    return 0
