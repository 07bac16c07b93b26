"""Items 1 and 2: PGD-10 throughput against torchattacks, and a pgd-at epoch of fit() against the
obvious DataLoader + torchattacks reference."""

from __future__ import annotations

import copy
import statistics

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import pgd
from ..data import DataBundle
from ..models import set_fast_input_grad
from ..models.layout import choose_layout
from ..train import fit
from .core import (NO_TORCHATTACKS, BenchContext, Row, card_objective, first_batch,
                   import_torchattacks, interleaved, join_notes, paired_ratio, speedup_row)


# ---------------------------------------------------------------------------- 1. PGD throughput
def nchw_copy(model: nn.Module) -> nn.Module:
    """The same weights in PyTorch's default NCHW layout (how a reference library gets them)."""
    copied = copy.deepcopy(model)
    choose_layout(copied, False)
    return copied


def bench_pgd(ctx: BenchContext) -> list[Row]:
    """PGD-k samples per second: :func:`samplewise.attacks.pgd` vs ``torchattacks.PGD``.

    Row 1 gives each library's model as it builds it: ours as :func:`create_model` makes it
    (NHWC on the CPU, :mod:`samplewise.models.layout`), torchattacks the same weights in PyTorch's
    default NCHW layout. Row 2 gives both the same NHWC model: the attack loops alone, which do
    the same arithmetic.
    """
    p = ctx.plan
    bundle, note = ctx.data(p.pgd_dataset, None)
    card = bundle.card
    x, y = first_batch(bundle, p.pgd_batch, ctx.device)
    ta = import_torchattacks()
    rows = []
    for name, nhwc in ((f"pgd-{p.steps} throughput", False), (f"pgd-{p.steps} same layout", True)):
        model = ctx.model(bundle)  # in the layout create_model chose (NHWC on the CPU)
        ref_model = model if nhwc else nchw_copy(model)
        gen = torch.Generator(device="cpu").manual_seed(0)
        what = "both on the NHWC model" if nhwc else \
            "ours as create_model builds it (NHWC on the CPU), torchattacks an NCHW copy"
        measure = (f"samples/s, ours / torchattacks.PGD ({card.name}, batch {len(y)}, cnn-small, "
                   f"{what})")
        fns = {"ours": (lambda m=model, g=gen: pgd(m, x, y, eps=card.eps, alpha=card.alpha,
                                                   steps=p.steps, generator=g))}
        if ta is not None:
            attack = ta.PGD(ref_model, eps=card.eps, alpha=card.alpha, steps=p.steps,
                            random_start=True)
            fns["ref"] = lambda a=attack: a(x, y)
        if p.warmup:
            interleaved(fns, 1, ctx.device)
        t = interleaved(fns, max(2, p.repeats), ctx.device)
        ours_tp = len(y) / statistics.median(t["ours"])
        target = None if nhwc else (">=", 1.0)
        if ta is None:
            rows.append(Row(name, ours_tp, None, None, "samples/s", measure, target,
                            join_notes(NO_TORCHATTACKS, note), skipped=True))
            continue
        rows.append(Row(name, ours_tp, len(y) / statistics.median(t["ref"]),
                        paired_ratio(t["ref"], t["ours"]), "samples/s", measure, target,
                        join_notes(f"median of {max(2, p.repeats)} interleaved repeats", note)))
    return rows


# ---------------------------------------------------------------------------- 2. pgd-at epoch
class _UInt8Dataset(torch.utils.data.Dataset):
    """What torchvision's MNIST-style datasets do: uint8 images, a PIL image per sample, then the
    per-sample transform."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image
        img = self.x[i]
        img = Image.fromarray(img[0].numpy(), mode="L") if img.shape[0] == 1 else \
            Image.fromarray(img.permute(1, 2, 0).numpy())
        return self.transform(img), int(self.y[i])


def reference_loader(bundle: DataBundle, batch_size: int, seed: int = 0):
    """``DataLoader`` (``num_workers=0``, shuffled) over per-sample torchvision transforms:
    RandomCrop(pad) + RandomHorizontalFlip (when the dataset card asks for them) + ToTensor."""
    from torchvision import transforms
    card = bundle.card
    steps = []
    if card.crop_pad > 0:
        steps.append(transforms.RandomCrop(card.shape[1:], padding=card.crop_pad))
    if card.flip:
        steps.append(transforms.RandomHorizontalFlip())
    steps.append(transforms.ToTensor())
    ds = _UInt8Dataset(bundle.train.x, bundle.train.y, transforms.Compose(steps))
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True,
                                       generator=torch.Generator().manual_seed(seed))


def plain_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float,
              steps: int) -> torch.Tensor:
    """The reference's PGD when torchattacks is absent: torchattacks' ``PGD.forward`` written out
    (uniform start, mean CE, ``torch.autograd.grad``, clamp to the ε-ball and [0, 1])."""
    was = model.training
    model.eval()
    x = x.clone().detach()
    adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1).detach()
    for _ in range(steps):
        adv.requires_grad = True
        grad = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)[0]
        adv = adv.detach() + alpha * grad.sign()
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1).detach()
    model.train(was)
    return adv


def reference_epoch(model: nn.Module, bundle: DataBundle, *, steps: int, batch_size: int,
                    device: torch.device, lr: float = 0.1, seed: int = 0) -> str:
    """One PGD-AT epoch the obvious way; returns which PGD it used."""
    card = bundle.card
    ta = import_torchattacks()
    attack = ta.PGD(model, eps=card.eps, alpha=card.alpha, steps=steps, random_start=True) \
        if ta is not None else None
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    for x, y in reference_loader(bundle, batch_size, seed):
        x, y = x.to(device), y.to(device)
        x_adv = attack(x, y) if attack is not None else \
            plain_pgd(model, x, y, eps=card.eps, alpha=card.alpha, steps=steps)
        loss = F.cross_entropy(model(x_adv), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return "torchattacks.PGD" if attack is not None else "hand-written PGD (torchattacks absent)"


def bench_epoch(ctx: BenchContext) -> list[Row]:
    """A pgd-at epoch of fit() vs DataLoader + per-sample transforms + PGD + SGD step."""
    from ..data import InMemoryLoader
    p = ctx.plan
    bundle, note = ctx.data(p.epoch_dataset, p.epoch_size)
    init = copy.deepcopy(ctx.model(bundle).state_dict())
    used = {}

    def fresh(stock: bool = False) -> nn.Module:
        m = ctx.model(bundle)
        m.load_state_dict(init)
        if stock:  # the reference builds the architecture from stock layers, in NCHW
            set_fast_input_grad(m, False)
            choose_layout(m, False)
        return m

    def ours():
        fit(fresh(), bundle, card_objective("pgd-at", bundle, p.steps),
            ctx.cfg(bundle, "pgd-at", 1, p.steps), device=ctx.device)

    def ref():
        used["pgd"] = reference_epoch(fresh(stock=True), bundle, steps=p.steps, batch_size=p.batch_size,
                                      device=ctx.device)

    t = interleaved({"ours": ours, "ref": ref}, p.epoch_repeats, ctx.device)
    what = f"{bundle.card.name} {len(bundle.train)} samples, cnn-small, batch {p.batch_size}, PGD-{p.steps}"
    rows = [speedup_row("pgd-at epoch", t["ours"], t["ref"], "s/epoch",
                        f"speed-up: reference / ours seconds per epoch ({what})", (">=", 1.5),
                        join_notes(f"reference: DataLoader(num_workers=0) + per-sample "
                                   f"torchvision transforms + {used['pgd']} + SGD step on the same "
                                   f"architecture with a stock nn.Conv2d stem; ours: fit() wall "
                                   f"time with its defaults (NHWC layout for conv nets on the CPU, "
                                   f"the stem's fast input gradient); median of {p.epoch_repeats} "
                                   f"interleaved repeats", note))]

    # what the 1.5x target is about: the data path alone (load + augment one epoch)
    loader = InMemoryLoader(bundle.train, batch_size=p.batch_size, augment=True, card=bundle.card,
                            device=ctx.device)

    def ours_load():
        for _ in loader:
            pass

    def ref_load():
        for x, _ in reference_loader(bundle, p.batch_size):
            x.to(ctx.device)

    t = interleaved({"ours": ours_load, "ref": ref_load}, p.repeats, ctx.device)
    rows.append(speedup_row("data path of an epoch", t["ours"], t["ref"], "s/epoch",
                            f"speed-up: DataLoader + per-sample transforms / InMemoryLoader "
                            f"({bundle.card.name} {len(bundle.train)} samples, crop+flip as the "
                            "card says)", None,
                            join_notes("loading and augmentation only, no model", note)))
    return rows


