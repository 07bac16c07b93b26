"""Item 7: the speed flags on this device (memory layout, bf16 autocast), the 1-channel batch
layout and the stem's fast input gradient."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch

from ..data import DataBundle
from ..models.layout import choose_layout
from ..train import fit
from .core import Row, BenchContext, card_objective, interleaved, speedup_row, join_notes
from .training import pass_times


# ---------------------------------------------------------------------------- 7. fast paths
def _bf16_hardware() -> bool | None:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def bench_fastpaths(ctx: BenchContext) -> list[Row]:
    """The TrainConfig speed flags on this device: a pgd-at epoch in the NHWC layout
    (``channels_last``; the CPU default for conv nets) against NCHW, and with ``amp="bf16"``
    against the same epoch without it (reported, no target)."""
    p = ctx.plan
    bundle, note = ctx.data(p.epoch_dataset, p.fastpath_size)
    # name -> (flags of the measured epoch, flags of its baseline)
    pairs = {"channels_last": ({"channels_last": True}, {"channels_last": False}),
             "bf16 autocast": ({"amp": "bf16"}, {})}

    def run(kw: dict) -> Callable[[], float]:
        def go():
            cfg = replace(ctx.cfg(bundle, "pgd-at", 1, p.steps), **kw)
            res = fit(ctx.model(bundle), bundle, card_objective("pgd-at", bundle, p.steps), cfg,
                      device=ctx.device)
            secs.setdefault(tuple(sorted(kw.items())), []).append(res.metrics[0]["seconds"])
        return go

    rows = [_layout_row(ctx, bundle, note), _stem_row(ctx, bundle, note)]
    secs: dict[tuple, list[float]] = {}
    variants = {tuple(sorted(kw.items())): kw for pair in pairs.values() for kw in pair}
    fns = {str(key): run(kw) for key, kw in variants.items()}
    if p.warmup:
        interleaved(fns, 1, ctx.device)
        secs.clear()
    interleaved(fns, p.slow_repeats, ctx.device)
    hw = _bf16_hardware()
    default_nhwc = ctx.fit_layout(bundle, ctx.model(bundle)) is torch.channels_last
    for name, (kw, base_kw) in pairs.items():
        t, base = secs[tuple(sorted(kw.items()))], secs[tuple(sorted(base_kw.items()))]
        if "channels_last" in kw:
            vs = "NCHW"
            why = ("same maths, NHWC memory layout: oneDNN's NHWC convolutions"
                   + (" (on by default for conv nets on the CPU)" if default_nhwc else ""))
        else:
            vs = "the default layout in float32"
            why = ("convolutions and matmuls in bfloat16 (attack steps too, inside the objective); "
                   f"oneDNN bf16 support on this CPU: {hw}")
        rows.append(speedup_row(f"pgd-at epoch {name}", t, base, "s/epoch",
                                f"speed-up: {vs} / {name} seconds per epoch ({bundle.card.name} "
                                f"{len(bundle.train)} samples, PGD-{p.steps}, {ctx.device.type})",
                                None, join_notes(why, f"fit() epoch seconds, median of "
                                                 f"{p.slow_repeats}; accuracy effects not measured "
                                                 "here", note)))
    return rows


def _layout_row(ctx: BenchContext, bundle: DataBundle, note: str) -> Row:
    """A 1-channel batch as the crop/flip gather makes it (channel stride H*W) against the same
    values with channel stride 1, which oneDNN runs on its channels-last convolution path."""
    name, measure = "1-channel batch layout", "speed-up of a bare forward+backward: channel " \
        "stride H*W (augmented batch) / channel stride 1"
    x, y = ctx.augmented_batch(bundle)
    if x.shape[1] != 1:
        return Row(name, None, None, None, "s/batch", measure, None,
                   f"skipped: {bundle.card.name} has {x.shape[1]} channels", skipped=True)
    b, _, h, w = x.shape
    gathered = x.reshape(b, h * w).as_strided(x.shape, (h * w, h * w, w, 1))
    strided = x.reshape(b, h, w, 1).permute(0, 3, 1, 2)  # a free view: channel stride 1
    model = ctx.model(bundle)
    choose_layout(model, False)  # the input strides matter on the NCHW model's path
    reps = max(3, 3 * ctx.plan.slow_repeats)
    t = {k: [] for k in ("hw", "one")}
    for _ in range(reps):  # interleaved, one pass each
        for key, xx in (("hw", gathered), ("one", strided)):
            t[key].append(pass_times(model, xx, y, ctx.device, 1)["fb"])
    return speedup_row(name, t["one"], t["hw"], "s/batch", f"{measure} ({bundle.card.name}, "
                       f"batch {len(y)}, cnn-small)", None,
                       join_notes("same values, same shape; only the stride of the size-1 channel "
                                  "dimension differs (InMemoryLoader's augmented batches have H*W, "
                                  "its plain ones 1)", f"median of {reps}", note))


def _stem_row(ctx: BenchContext, bundle: DataBundle, note: str) -> Row:
    """PGD-k on one batch with :class:`~samplewise.models.StemConv2d`'s fast input gradient
    against the same model with it off (the library's transposed-convolution kernel)."""
    from ..attacks import pgd
    from ..models import set_fast_input_grad
    p = ctx.plan
    name = "stem input gradient"
    measure = f"speed-up of PGD-{p.steps} on one batch: library kernel / matmul + fold"
    fast = ctx.model(bundle)
    if not set_fast_input_grad(fast, True):
        return Row(name, None, None, None, "s/batch", measure, None,
                   f"skipped: {bundle.card.name} has {bundle.card.shape[0]} channels (the fast "
                   "path is for one-channel stems)", skipped=True)
    plain = ctx.model(bundle)
    set_fast_input_grad(plain, False)
    fmt = ctx.fit_layout(bundle, fast)
    x, y = ctx.augmented_batch(bundle)
    x = x.contiguous(memory_format=fmt)
    card = bundle.card
    fns = {key: (lambda m=m.to(memory_format=fmt): pgd(m, x, y, eps=card.eps, alpha=card.alpha,
                                                         steps=p.steps))
           for key, m in (("fast", fast), ("plain", plain))}
    if p.warmup:
        interleaved(fns, 1, ctx.device)
    reps = max(3, p.repeats)
    t = interleaved(fns, reps, ctx.device)
    return speedup_row(name, t["fast"], t["plain"], "s/batch", f"{measure} ({card.name}, batch "
                       f"{len(y)}, cnn-small, {'NHWC' if fmt is torch.channels_last else 'NCHW'})",
                       None, join_notes("same values; the one-channel stem's input gradient as "
                                        "(grad @ W) then fold (on by default; the weight gradient "
                                        "is untouched)", f"median of {reps} interleaved repeats",
                                        note))
