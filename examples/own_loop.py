"""samplewise's pieces in your own PyTorch loop: EasyCore and SAAD without samplewise's fit.

A plain torch Dataset + DataLoader + nn.Module on the bundled 8x8 digits (inputs in [0, 1]):

1. train a scoring model with cross-entropy and track each sample's AIGN with AIGNMeter;
2. select the easiest half (EasyCore, class-balanced) with sw.select;
3. adversarially train a teacher on that coreset with the "pgd-at" objective;
4. distil a smaller student from it with SAAD, in the same kind of loop.

Runs in seconds on a CPU:  python examples/own_loop.py [--epochs 4] [--out DIR]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

import samplewise as sw

EPS, ALPHA = 0.2, 0.05  # the digits card's L-inf radius and PGD step


def digits():
    """Training and test sets as plain TensorDatasets of floats in [0, 1]."""
    bundle = sw.load_dataset("digits")
    to_set = lambda split: TensorDataset(split.x.float() / 255, split.y)  # noqa: E731
    return to_set(bundle.train), to_set(bundle.test)


def mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def track_aign(meter: sw.AIGNMeter, model: nn.Module, loader: DataLoader) -> None:
    """One AIGN column: the input-gradient norm of every sample at the current weights
    (what `samplewise score` computes after each epoch in its default checkpoint mode)."""
    for x, y, idx in loader:
        meter.update(idx, model, x, y)
    meter.end_epoch()


def accuracy(model: nn.Module, data: TensorDataset, attack: bool = False) -> float:
    x, y = data.tensors
    model.eval()
    if attack:
        x = sw.pgd(model, x, y, eps=EPS, alpha=ALPHA, steps=10,
                   generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train(model, loader, loss_fn, epochs: int, lr: float = 0.1, after_epoch=None) -> None:
    """A plain SGD loop; ``loss_fn(model, x, y, idx, epoch)`` returns the batch loss."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for epoch in range(epochs):
        model.train()
        for x, y, idx in loader:
            loss = loss_fn(model, x, y, idx, epoch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if after_epoch is not None:
            after_epoch(model)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--out", help="write the AIGN score file (scores.npz) here")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    train_set, test_set = digits()
    data = sw.IndexedDataset(train_set)                        # items: (x, y, dataset index)
    shuffled = DataLoader(data, batch_size=64, shuffle=True)
    in_order = DataLoader(data, batch_size=512)

    # 1. scoring run: standard training, AIGN after every epoch
    scorer = mlp(128)
    meter = sw.AIGNMeter(len(data), p=2)
    ce = lambda m, x, y, idx, epoch: F.cross_entropy(m(x), y)  # noqa: E731
    train(scorer, shuffled, ce, args.epochs, after_epoch=lambda m: track_aign(meter, m, in_order))
    aign, labels = meter.scores(), train_set.tensors[1].numpy()
    if args.out:
        meter.to_table(labels, meta={"dataset": "digits"}).save(f"{args.out}/scores.npz")
    print(f"AIGN of {len(aign)} samples over {len(meter.columns)} epochs: "
          f"mean {aign.mean():.4f}, max {aign.max():.4f}")

    # 2. EasyCore: the easiest fraction (lowest AIGN) of every class
    core = sw.select(aign, "easycore", args.fraction, labels=labels, class_balanced=True)
    print(f"EasyCore keeps {len(core)} samples: AIGN {aign[core].mean():.4f} inside, "
          f"{np.delete(aign, core).mean():.4f} outside")

    # 3. PGD-AT on the coreset, with the objective samplewise's fit would use
    pgd_at = sw.build_objective("pgd-at", eps=EPS, alpha=ALPHA, steps=5)
    teacher = mlp(256)
    core_loader = DataLoader(Subset(data, core.tolist()), batch_size=64, shuffle=True)
    train(teacher, core_loader, lambda m, x, y, idx, epoch: pgd_at(m, x, y)["loss"],
          3 * args.epochs)
    teacher_acc = accuracy(teacher, test_set), accuracy(teacher, test_set, attack=True)
    print(f"PGD-AT teacher on the coreset: clean {teacher_acc[0]:.3f}, PGD-10 {teacher_acc[1]:.3f}")

    # 4. SAAD: the student's loss weights each sample by its transfer to the teacher
    saad = sw.build_objective("saad", teacher=teacher, eps=EPS, alpha=ALPHA, steps=5)
    student, tas = mlp(64), []
    epochs = 3 * args.epochs

    def saad_loss(m, x, y, idx, epoch):
        out = saad(m, x, y, idx=idx, epoch=epoch, epochs=epochs)  # the epoch drives IGDM's t/E
        tas.append(out["transfer"].float().mean().item())
        return out["loss"]

    train(student, shuffled, saad_loss, epochs, lr=0.05)
    student_acc = accuracy(student, test_set), accuracy(student, test_set, attack=True)
    print(f"SAAD student: clean {student_acc[0]:.3f}, PGD-10 {student_acc[1]:.3f}, "
          f"transfer rate {np.mean(tas):.3f}")
    return {"aign": aign, "coreset": core, "teacher_acc": teacher_acc, "student_acc": student_acc}


if __name__ == "__main__":
    main()
