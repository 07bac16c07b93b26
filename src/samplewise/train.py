"""One training loop for every objective: :func:`fit`.

The loop owns the optimiser, the schedule, when checkpoints are written and the metrics; the
objective owns the loss; hooks (per-sample trackers) see each batch with its dataset indices. A
checkpoint (the file: :mod:`samplewise.checkpoint`) is written atomically after every epoch with
everything needed to continue bit for bit: weights, optimiser,
schedule, global RNG states, the objective's and the hooks' state (the loader's order and the
attacks' noise are derived from ``(seed, epoch)`` and need no saved state). On SIGTERM/SIGINT
(:mod:`samplewise.preemption`) the loop finishes its step and writes a mid-epoch checkpoint
(the step, the epoch's attack generator state and running sums), then raises ``Preempted``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from . import io, preemption
from .checkpoint import CHECKPOINT, METRICS_FILE, restore_checkpoint, write_checkpoint
from .config import TrainConfig, with_recipe
from .data import DataBundle, InMemoryLoader, Split
from .errors import SamplewiseError
from .hooks import Hook
from .evaluate import evaluate
from .models.layout import choose_layout, run_in_nhwc
from .objectives import Objective, StepContext
from .distributed import all_reduce_sum
from .runinfo import derived_generator

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    model: nn.Module
    metrics: list[dict] = field(default_factory=list)
    epochs_run: int = 0
    steps_per_epoch: int = 0


class NonFiniteLoss(SamplewiseError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def lr_lambda(cfg: TrainConfig, total_steps: int):
    """Multiplier of the base learning rate at a given optimiser step (with linear warm-up)."""
    warm = int(cfg.warmup_epochs * total_steps / max(cfg.epochs, 1))
    bounds = [int(m * total_steps) for m in cfg.milestones]

    def fn(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = step / max(total_steps, 1)
        if cfg.schedule == "multistep":
            return cfg.gamma ** sum(step >= b for b in bounds)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if cfg.schedule == "onecycle":  # triangular: up to the peak at 40%, down to 0
            return t / 0.4 if t < 0.4 else max(0.0, (1 - t) / 0.6)
        return 1.0

    return fn


def make_optimizer(model: nn.Module, cfg: TrainConfig):
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, nesterov=cfg.nesterov and cfg.momentum > 0)
    return opt


def _progress(iterable, enabled: bool, desc: str, total: int):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, disable=None)


@preemption.stoppable
def fit(model: nn.Module, bundle: DataBundle, objective: Objective, cfg: TrainConfig, *,
        out_dir: str | Path | None = None, hooks: Sequence[Hook] = (), subset=None,
        device: str | torch.device = "cpu", resume: bool = False, rank: int = 0,
        world_size: int = 1, ddp_model: nn.Module | None = None) -> FitResult:
    """Train ``model`` on ``bundle.train`` (or ``subset`` of it) with ``objective``.

    ``fit`` sets the memory layout of ``model`` (:func:`samplewise.models.layout.run_in_nhwc`),
    which stays in that layout after; a teacher keeps the layout its loader chose
    (:mod:`samplewise.models.layout`).

    Args:
        subset: dataset indices to train on (validated by :meth:`Split.subset`).
        out_dir: where ``checkpoint.pt`` and ``metrics.jsonl`` go (rank 0 only); None: nowhere.
        resume: continue from ``out_dir/checkpoint.pt`` (at the step a preempted run stopped).
        ddp_model: the DistributedDataParallel wrapper to step through (multi-process runs).

    Recipe keys ``cfg`` leaves unset (``weight_decay``) take ``objective.recipe``'s values.

    Example:
        >>> res = fit(model, load_dataset("digits"), build_objective("standard", eps=0.1,
        ...           alpha=0.025, steps=0), TrainConfig(epochs=2))
    """
    cfg = with_recipe(cfg, objective.recipe)
    train_split = bundle.train.subset(subset) if subset is not None else bundle.train
    augment = cfg.augment if cfg.augment is not None else (bundle.card.crop_pad > 0 or bundle.card.flip)
    loader = InMemoryLoader(train_split, batch_size=cfg.batch_size, shuffle=True, augment=augment,
                            card=bundle.card, seed=cfg.seed, device=device, rank=rank,
                            world_size=world_size)
    objective.bind(train_split.index)
    model.to(device)
    nhwc = run_in_nhwc(cfg.channels_last, model, device, ddp=ddp_model is not None)
    step_model = _fast_paths(model, ddp_model, cfg, nhwc)
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, cfg.epochs * len(loader)))
    swa = _SWA(model, cfg) if cfg.swa_start is not None else None
    run_dir = Path(out_dir) if out_dir is not None else None
    out_dir = run_dir if rank == 0 else None  # only rank 0 writes
    monitor = bundle.test
    for h in hooks:
        h.on_fit_start(model, loader, cfg)

    start, metrics, partial = 0, [], None
    if resume:
        start, metrics, partial = restore_checkpoint(run_dir, model, opt, sched, objective, hooks,
                                                     swa, write=rank == 0, steps=len(loader))
        log.info("resumed from %s at epoch %d%s", run_dir / CHECKPOINT, start,
                 f", step {partial['step']}" if partial is not None else "")
    elif out_dir is not None:
        (out_dir / METRICS_FILE).unlink(missing_ok=True)

    input_grad = any(h.needs_input_grad for h in hooks)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")
    check_each_step = torch.device(device).type == "cpu"  # a sync per step is free on the CPU
    stoppable = out_dir is not None and world_size == 1  # SIGTERM/SIGINT: checkpoint and stop
    for epoch in range(start, cfg.epochs):
        model.train()
        loader.set_epoch(epoch)
        gen = derived_generator(cfg.seed, 104729, epoch, rank)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        hits = torch.zeros((), device=device)
        extra: dict[str, torch.Tensor] = {}
        seen, first = 0, 0
        if partial is not None:  # preempted mid-epoch: its generator, its sums, the rest of its batches
            first, seen, t0 = partial["step"], partial["seen"], t0 - partial["seconds"]
            gen.set_state(partial["generator"])
            loss_sum, hits = partial["loss_sum"].to(device), partial["hits"].to(device)
            extra = {k: v.to(device) for k, v in partial["extra"].items()}
            partial = None
        bar = _progress(loader.batches(first), cfg.progress and rank == 0,
                        f"epoch {epoch + 1}/{cfg.epochs}", len(loader))
        for step, (x, y, idx) in enumerate(bar, first):
            if nhwc:
                x = x.contiguous(memory_format=torch.channels_last)
            if input_grad:
                x.requires_grad_(True)
            ctx = StepContext(epoch, cfg.epochs, step, len(loader), gen)
            with autocast:
                out = objective(step_model, x, y, idx, ctx)
            loss = out["loss"]
            if check_each_step and not torch.isfinite(loss):
                raise NonFiniteLoss(f"loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                                    "stopped (the last good checkpoint is kept)")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            for h in hooks:
                h.on_batch_end(model, x, y, idx, out, epoch, step)
            loss_sum += loss.detach() * len(y)
            hits += (out["logits"].detach().argmax(1) == y).sum()
            for k, v in out.get("epoch_metrics", {}).items():  # e.g. a distiller's transfer flags
                extra[k] = extra.get(k, 0) + v.detach().float().sum()
            seen += len(y)
            if stoppable and preemption.requested():
                write_checkpoint(out_dir, model, opt, sched, objective, hooks, swa, epoch, partial={
                    "step": step + 1, "steps": len(loader), "seen": seen, "loss_sum": loss_sum,
                    "hits": hits, "extra": extra, "seconds": time.perf_counter() - t0,
                    "generator": gen.get_state()})
                raise _stopped(out_dir, f"at epoch {epoch + 1}, step {step + 1} of {len(loader)}")
        if world_size > 1:  # epoch metrics over every rank's shard
            totals = all_reduce_sum(torch.stack([loss_sum, hits, torch.tensor(float(seen), device=device),
                                                 *extra.values()]))
            loss_sum, hits, seen = totals[0], totals[1], int(totals[2].item())
            extra = dict(zip(extra, totals[3:]))
        if not torch.isfinite(loss_sum):
            raise NonFiniteLoss(f"loss became non-finite during epoch {epoch + 1}; stopped "
                                "(the last good checkpoint is kept)")
        seconds = time.perf_counter() - t0
        if swa is not None:
            swa.update(epoch)
        record = {"epoch": epoch + 1, "loss": loss_sum.item() / seen, "train_acc": hits.item() / seen,
                  "lr": opt.param_groups[0]["lr"], "seconds": round(seconds, 4),
                  **{k: v.item() / seen for k, v in extra.items()}}
        for h in hooks:
            record.update(h.on_epoch_end(model, epoch) or {})
        if rank == 0:
            record.update(_monitor(model, monitor, cfg, objective, device))
        metrics.append(record)
        for h in hooks:
            h.on_metrics(record)
        log.info("epoch %d/%d %s", epoch + 1, cfg.epochs,
                 " ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float)))
        if out_dir is not None:
            io.append_jsonl(out_dir / METRICS_FILE, record)
            write_checkpoint(out_dir, model, opt, sched, objective, hooks, swa, epoch + 1)
            if stoppable and preemption.requested() and epoch + 1 < cfg.epochs:
                raise _stopped(out_dir, f"after epoch {epoch + 1}")
    if swa is not None:
        swa.finalize(model, loader)
    return FitResult(model=model, metrics=metrics, epochs_run=cfg.epochs, steps_per_epoch=len(loader))


def _fast_paths(model: nn.Module, ddp_model: nn.Module | None, cfg: TrainConfig,
                nhwc: bool) -> nn.Module:
    """The module the step calls: DDP wrapper if any, NHWC layout and ``torch.compile`` by flag.

    channels_last only changes the memory layout (same maths); bf16 autocast (in :func:`fit`)
    runs matmuls/convolutions in bfloat16 with float32 weights, so no loss scaling is needed.
    """
    if nhwc or ddp_model is None:  # under DDP the run chose the layout before wrapping the model
        choose_layout(model, nhwc)
    step_model = ddp_model if ddp_model is not None else model
    if cfg.compile:
        step_model = torch.compile(step_model)
    return step_model


def _monitor(model, split: Split, cfg: TrainConfig, objective: Objective, device) -> dict:
    """Clean and PGD accuracy on a fixed held-out slice (``cfg.eval_n`` samples)."""
    n = min(cfg.eval_n, 256)
    res = evaluate(model, split, attack="pgd" if cfg.monitor_steps > 0 else "clean",
                   eps=objective.eps, alpha=objective.alpha, steps=cfg.monitor_steps, n=n,
                   seed=cfg.seed, device=device)
    return {"test_clean_acc": res["clean_acc"], "test_pgd_acc": res["robust_acc"]}


class _SWA:
    """Stochastic weight averaging of the student from ``swa_start`` (a fraction of the epochs).

    With ``s = floor(swa_start * epochs)``, the weights at the end of epochs ``s, s+1, ...,
    epochs`` (1-based; epoch 1 when ``s = 0``) are averaged: ``swa_start=0.475`` over 200
    epochs averages from epoch 95 on, as SAAD's official code does.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig):
        self.start = max(1, math.floor(cfg.swa_start * cfg.epochs + 1e-9))
        self.model = model
        self.avg = AveragedModel(model)

    def update(self, epoch: int) -> None:
        if epoch + 1 >= self.start:  # epoch is 0-based
            self.avg.update_parameters(self.model)

    def finalize(self, model: nn.Module, loader: InMemoryLoader) -> None:
        """Copy the averaged weights into ``model`` and recompute BatchNorm statistics."""
        model.load_state_dict(self.avg.module.state_dict())
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass
        model.train()
        loader.set_epoch(0)
        with torch.no_grad():
            for x, _, _ in loader:
                model(x)
        model.eval()

    def state_dict(self) -> dict:
        return self.avg.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.avg.load_state_dict(state)


def _stopped(out_dir: Path, where: str) -> preemption.Preempted:
    signum = preemption.requested()
    log.info("%s received: checkpoint written %s", preemption.signal_name(signum), where)
    return preemption.Preempted(signum, f"stopped by {preemption.signal_name(signum)} {where}; "
                                f"checkpoint saved to {out_dir / CHECKPOINT}")
