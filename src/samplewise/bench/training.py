"""Items 3 to 5: training-loop efficiency against the ideal pass count, AIGN tracking overhead,
and the distillation methods' epoch times (SAAD against its bases, every method against rslad)."""

from __future__ import annotations

import statistics
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import DataBundle
from ..errors import SamplewiseError
from ..train import fit
from .core import (IDEAL_PASSES, BenchContext, Row, card_objective, fit_epoch_seconds,
                   interleaved, join_notes, median_seconds, paired_ratio)


# ---------------------------------------------------------------------------- 3. efficiency
def pass_times(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
               n: int = 5) -> dict[str, float]:
    """Median seconds of bare passes on one batch: ``fb`` (train-mode forward + full backward),
    ``f`` (no-grad forward) and ``fi`` (eval-mode forward + input-only backward, an attack step)."""
    def fb():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    def f():
        with torch.no_grad():
            model(x)

    def fi():
        xr = x.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)

    model.train()
    fb()
    out = {"fb": median_seconds(fb, n, device), "f": median_seconds(f, n, device)}
    model.eval()
    fi()
    out["fi"] = median_seconds(fi, n, device)
    model.train()
    model.zero_grad(set_to_none=True)
    return out


def ideal_batch_seconds(objective: str, k: int, t: dict[str, float], strict: bool = False) -> float:
    """Ideal seconds of one step (see :data:`IDEAL_PASSES`); ``strict`` counts the attack
    steps as input-only backwards (``fi``), which are cheaper than a full ``fb``."""
    step = t["fi"] if strict else t["fb"]
    if objective == "standard":
        return t["fb"]
    if objective == "pgd-at":
        return k * step + t["fb"]
    if objective == "trades":
        return k * step + t["f"] + 2 * t["fb"]
    raise SamplewiseError(f"no ideal pass count for objective '{objective}'")


def epoch_pass_times(ctx: BenchContext, bundle: DataBundle, model: nn.Module,
                     reps: int | None = None) -> list[tuple[int, dict[str, float]]]:
    """``[(batches, pass_times)]`` for an epoch's full batches and its last partial one.

    The batches come from the loader :func:`fit` uses (same augmentation), in the memory layout
    :func:`fit` uses (NHWC for conv nets on the CPU), because the layout matters: oneDNN picks
    a different convolution path for each (here up to ~2x apart).
    """
    from ..data import InMemoryLoader
    n, b = len(bundle.train), ctx.plan.batch_size
    reps = reps or (5 if ctx.plan.warmup else 2)
    card = bundle.card
    loader = InMemoryLoader(bundle.train, batch_size=b, augment=card.crop_pad > 0 or card.flip,
                            card=card, device=ctx.device)
    batches = list(loader)
    out = [(n // b, batches[0])] if n >= b else []
    if n % b:
        out.append((1, batches[-1]))
    fmt = ctx.fit_layout(bundle, model)  # as fit() will run it
    model.to(memory_format=fmt)
    return [(count, pass_times(model, x.contiguous(memory_format=fmt), y, ctx.device, reps))
            for count, (x, y, _) in out]


def ideal_epoch_seconds(times: list[tuple[int, dict[str, float]]], objective: str, k: int,
                        strict: bool = False) -> float:
    """Ideal seconds of an epoch from :func:`epoch_pass_times` (see :data:`IDEAL_PASSES`)."""
    return sum(count * ideal_batch_seconds(objective, k, t, strict) for count, t in times)


def bench_efficiency(ctx: BenchContext) -> list[Row]:
    """Ideal epoch time over fit()'s measured epoch time for standard, pgd-at and trades."""
    p = ctx.plan
    bundle, note = ctx.data(p.small_dataset, p.small_size)
    rows = []
    for name in ("standard", "pgd-at", "trades"):
        k = 0 if name == "standard" else p.steps
        ideal, strict, measured = [], [], []
        if p.warmup:
            fit_epoch_seconds(ctx, bundle, ctx.model(bundle), name, k)
        for _ in range(p.slow_repeats):
            model = ctx.model(bundle)
            times = epoch_pass_times(ctx, bundle, model)
            ideal.append(ideal_epoch_seconds(times, name, k))
            strict.append(ideal_epoch_seconds(times, name, k, strict=True))
            measured.append(fit_epoch_seconds(ctx, bundle, model, name, k))
        ratio = paired_ratio(ideal, measured)
        rows.append(Row(f"efficiency {name}", statistics.median(measured), statistics.median(ideal),
                        ratio, "s/epoch",
                        f"ideal / measured epoch; ideal = {IDEAL_PASSES[name]} per batch "
                        f"({bundle.card.name} {len(bundle.train)} samples, batch {p.batch_size}, k={k})",
                        (">=", 0.85),
                        join_notes(f"strict ideal (attack steps as input-only backwards): "
                                   f"{paired_ratio(strict, measured):.3f}" if k else "",
                                   "measured: fit()'s epoch loop seconds; median of "
                                   f"{p.slow_repeats}", note)))
    return rows


# ---------------------------------------------------------------------------- 4. AIGN overhead
def bench_aign(ctx: BenchContext) -> list[Row]:
    """Standard training with and without an AIGN tracker (online and checkpoint mode)."""
    try:
        from ..hardness.trackers import EvalPassTracker, OnlineAIGNTracker
    except ImportError as exc:
        return [Row(f"aign {m} overhead", None, None, None, "s", "tracked / untracked", None,
                    f"skipped: samplewise.hardness.trackers not importable ({exc})", skipped=True)
                for m in ("online", "checkpoint")]
    p = ctx.plan
    bundle, note = ctx.data(p.small_dataset, p.small_size)

    def run(hooks: Callable[[], list]) -> Callable[[], None]:
        return lambda: fit(ctx.model(bundle), bundle, card_objective("standard", bundle, 0),
                           ctx.cfg(bundle, "standard", p.aign_epochs), hooks=hooks(),
                           device=ctx.device)

    fns = {"none": run(list), "online": run(lambda: [OnlineAIGNTracker(p=2)]),
           "checkpoint": run(lambda: [EvalPassTracker(p=2)])}
    if p.warmup:
        interleaved(fns, 1, ctx.device)
    t = interleaved(fns, p.aign_repeats, ctx.device)
    what = (f"{bundle.card.name} {len(bundle.train)} samples, {p.aign_epochs} standard epoch(s), "
            f"fit() wall time")
    targets = {"online": ((("<=", 1.05)), "OnlineAIGNTracker: the inputs require grad, so the "
                          "backward also computes the stem's input gradient; plus its norms"),
               "checkpoint": (None, "EvalPassTracker: one eval-mode forward + input-gradient pass "
                              "over the clean training set per tracked epoch")}
    return [Row(f"aign {mode} overhead", statistics.median(t[mode]), statistics.median(t["none"]),
                paired_ratio(t[mode], t["none"]), "s/run", f"tracked / untracked ({what})",
                target, join_notes(how, f"median of {p.aign_repeats}", note))
            for mode, (target, how) in targets.items()]


# ---------------------------------------------------------------------------- 5. SAAD
DISTILL_METHODS = ("ard", "rslad", "iad", "adaad", "igdm", "saad", "saad-measured")


def bench_saad(ctx: BenchContext) -> list[Row]:
    """Epoch time of saad against the methods it builds on (igdm, adaad; the target), and of
    every distillation method relative to rslad (reported; docs/distillation.md lists them)."""
    p = ctx.plan
    bundle, note = ctx.data(p.small_dataset, p.saad_size)
    teacher = ctx.model(bundle, seed=1, width=2).eval()
    methods = DISTILL_METHODS

    def run(name: str) -> Callable[[], float]:
        kw = {"warmup": 0.0} if name == "iad" else {}  # time iad with its introspection term on
        return lambda: fit_epoch_seconds(ctx, bundle, ctx.model(bundle), name, p.saad_steps,
                                  teacher=teacher, **kw)

    secs: dict[str, list[float]] = {m: [] for m in methods}
    for m in methods if p.warmup else ():
        run(m)()
    for r in range(p.slow_repeats):
        for m in (methods if r % 2 == 0 else methods[::-1]):
            secs[m].append(run(m)())
    what = (f"{bundle.card.name} {len(bundle.train)} samples, cnn-small student, cnn-small width-2 "
            f"teacher (untrained), k={p.saad_steps}, fit() epoch seconds, median of {p.slow_repeats}")
    pairs = [("saad", "igdm", ("<=", 1.05)), ("saad", "adaad", None),
             ("saad-measured", "igdm", None)]
    pairs += [(m, "rslad", None) for m in methods if m != "rslad"]
    rows = []
    for ours, base, target in pairs:
        why = "saad builds on igdm (AdaAD + IGDM term)" if base == "igdm" else ""
        if ours == "iad":
            why = "iad timed with warmup=0 (its introspection term on from the first epoch)"
        rows.append(Row(f"{ours} vs {base} epoch", statistics.median(secs[ours]),
                        statistics.median(secs[base]), paired_ratio(secs[ours], secs[base]),
                        "s/epoch", f"{ours} / {base} seconds per epoch ({what})", target,
                        join_notes(why, note)))
    return rows


