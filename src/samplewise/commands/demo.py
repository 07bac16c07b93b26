"""``samplewise demo``: EasyCore coresets and SAAD distillation end to end in about five minutes.

Example:
    $ samplewise demo --out runs/demo                       # bundled digits
    $ samplewise demo --dataset fashion-mnist --out runs/demo-fmnist
    $ samplewise demo --quick --out /tmp/demo-quick         # seconds; checks the machinery
    $ samplewise demo --out runs/demo --resume              # skip the finished stages
"""

from __future__ import annotations

import argparse

HELP = "run a small end-to-end demo (AIGN scores, EasyCore vs random vs EL2N, ARD/RSLAD/SAAD)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``samplewise demo``."""
    p.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist"],
                   help="digits (bundled, default) or fashion-mnist (apt-get install "
                   "dataset-fashion-mnist; a 5,000-image sample)")
    p.add_argument("--out", default="runs/demo", help="demo directory (default runs/demo)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny version (seconds): checks every stage runs; numbers mean nothing")
    p.add_argument("--resume", action="store_true", help="skip the finished stages in --out")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-root", help="where torchvision datasets live (default $SAMPLEWISE_DATA)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="log every epoch of every run")


def run(args: argparse.Namespace) -> int:
    """Run the demo, print both tables and where the report went."""
    from ..demo import run_demo

    res = run_demo(args.out, dataset=args.dataset, quick=args.quick, resume=args.resume,
                   device=args.device, data_root=args.data_root,
                   progress=not args.no_progress, verbose=args.verbose)
    ev = res["eval"]
    print(f"\n## Coresets ({res['coreset']['fraction']:.0%} of {res['dataset']}, "
          f"{res['coreset']['objective']}; PGD-{ev['steps']} at eps="
          f"{', '.join(format(r, 'g') for r in res['coreset']['radii'])}, n={ev['n']})\n")
    print(res["tables"]["coreset"])
    print("## Distillation\n")
    print(res["tables"]["distillation"])
    print(f"report: {res['paths']['report']} ({res['seconds']:.0f} s of stages)")
    return 0
