"""``samplewise score``: a scoring run that writes per-sample hardness scores (``scores.npz``).

Example:
    $ samplewise score --dataset digits --model cnn-small --epochs 10 --out runs/scores
"""

from __future__ import annotations

import argparse

HELP = "score every training sample's hardness (AIGN, EL2N, GraNd, forgetting, AUM, loss)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``samplewise score``."""
    p.add_argument("--config", help="YAML file of TrainConfig keys")
    p.add_argument("--dataset"), p.add_argument("--model"), p.add_argument("--epochs", type=int)
    p.add_argument("--mode", default="checkpoint", choices=["checkpoint", "online"],
                   help="checkpoint: eval-mode pass on clean inputs after each tracked epoch; "
                   "online: the training batches' own input gradients (augmented, train mode)")
    p.add_argument("--p", default="2", choices=["2", "1", "sq", "inf"], help="input-gradient norm")
    p.add_argument("--track-every", type=int, default=1, help="track every k-th epoch")
    p.add_argument("--early-epochs", type=int, help="tracked epochs averaged into EL2N/GraNd "
                   "(default: the first 10%%, at least 1)")
    p.add_argument("--train-size", type=int, help="seeded stratified sample of the training set")
    p.add_argument("--seed", type=int), p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float), p.add_argument("--device")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="write every epoch's metrics to OUT/tb/ (needs samplewise[tensorboard])")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="start again in a used --out")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override any config key (e.g. --set weight_decay=1e-4)")
    p.add_argument("--out", required=True, help="run directory (scores go to OUT/scores.npz)")


def run(args: argparse.Namespace) -> int:
    """Score, then print per-score mean/std and the file written."""
    from ..config import load_config
    from ..hardness.scoring import SCORES_FILE, score

    keys = ("dataset", "model", "epochs", "batch_size", "lr", "train_size", "seed", "device",
            "tensorboard")
    cfg = load_config(path=args.config, overrides=args.set, **{k: getattr(args, k) for k in keys})
    table = score(cfg, args.out, mode=args.mode, p=args.p, track_every=args.track_every,
                  early_epochs=args.early_epochs, resume=args.resume, overwrite=args.overwrite)
    if table is None:  # a non-zero rank under torchrun: rank 0 reports
        return 0
    print(f"{'score':<12}{'mean':>12}{'std':>12}")
    for name, s in table.summary().items():
        print(f"{name:<12}{s['mean']:>12.4g}{s['std']:>12.4g}")
    print(f"{len(table)} samples, {len(table.tracked_epochs())} tracked epochs -> "
          f"{args.out}/{SCORES_FILE}")
    return 0
