"""Speed figures measured side by side in one process (``samplewise bench``).

Every figure is a ratio of two timings taken in the same process on the same model, data and
batch. The two (or more) sides are interleaved, the order reversed on every other repeat, and the
figure is the MEDIAN of the per-repeat ratios, so that load from other jobs on a shared machine
moves both sides of a pair alike. Only the selection item reports absolute seconds (its target is
"under one second").

Items (each one or more rows of ``name, ours, reference, ratio, target, status, notes``):

1. ``pgd``: PGD-10 throughput against ``torchattacks.PGD`` (same ε, α, steps, random start).
2. ``epoch``: a ``pgd-at`` epoch of :func:`samplewise.train.fit` against the obvious reference:
   ``torch.utils.data.DataLoader`` over per-sample torchvision transforms, a PGD inner loop
   (``torchattacks.PGD``, else a hand-written copy of it) and a plain SGD step.
3. ``efficiency``: ideal epoch time (bare passes, see :data:`IDEAL_PASSES`) / measured epoch.
4. ``aign``: AIGN tracking overhead (online and checkpoint mode) on standard training.
5. ``saad``: SAAD epoch time against the distillation methods it builds on, and every
   distillation method's epoch time relative to ``rslad``.
6. ``selection``: coreset selection on 1.28 million synthetic scores, and the memory of a
   1.28M x 100-epoch score matrix.

:func:`measure_growth` (``samplewise bench --growth --plot FILE.png``) measures how a ``pgd-at``
epoch grows with the dataset size and the number of PGD steps, and :func:`plot_growth` draws it.

Example:
    >>> result = run_bench(quick=True, items=["pgd", "selection"])     # doctest: +SKIP
    >>> print(format_table(result["rows"]))                            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import io
from .attacks import pgd
from .config import TrainConfig, check_device
from .data import DataBundle, load_dataset
from .errors import SamplewiseError
from .models import create_model
from .objectives import build_objective
from .runinfo import __version__
from .train import Hook, fit, use_channels_last

log = logging.getLogger(__name__)

FORMAT = "samplewise.bench/1"
ITEMS = ("pgd", "epoch", "efficiency", "aign", "saad", "selection", "fastpaths")
INSTALL_HINT = "pip install 'samplewise[bench]'"
NO_TORCHATTACKS = f"skipped: torchattacks not installed ({INSTALL_HINT})"
#: bare passes per batch that an objective cannot avoid, with k = attack steps and
#: fb = forward + full backward of a batch, f = a no-grad forward of a batch
IDEAL_PASSES = {
    "standard": "1 fb",
    "pgd-at": "(k+1) fb: k attack steps + the training step",
    "trades": "(k+2) fb + 1 f: k attack steps (KL), a no-grad clean forward for the attack's "
              "target, then clean and adversarial forwards with one backward through both",
}
SCORE_SELECTORS = ("easycore", "hardcore", "random", "el2n", "grand", "forgetting", "aum", "loss",
                   "ccs")


# ---------------------------------------------------------------------------- plan and rows
@dataclass(frozen=True)
class BenchPlan:
    """Sizes of every item; :func:`make_plan` gives the full and the ``--quick`` plans."""

    quick: bool = False
    repeats: int = 5               # repeats of the cheap items (pgd, aign, data path)
    slow_repeats: int = 3          # repeats of the efficiency and saad items
    epoch_repeats: int = 2         # repeats of item 2 (two full epochs per repeat)
    warmup: bool = True            # one untimed run of every timed function first
    steps: int = 10                # PGD steps of the attacks and adversarial objectives
    batch_size: int = 128
    pgd_dataset: str = "fashion-mnist"
    pgd_batch: int = 128
    epoch_dataset: str = "fashion-mnist"
    epoch_size: int = 4_000        # the 10k takes ~15 min on a loaded 2-core CPU
    small_dataset: str = "digits"  # items 3-5: cheap epochs
    small_size: int | None = None  # None: the whole dataset
    aign_epochs: int = 2
    saad_size: int = 384
    fastpath_size: int = 512       # samples of the channels_last / bf16 epochs (epoch_dataset)
    saad_steps: int = 10
    selection_n: int = 1_280_000
    selection_epochs: int = 100
    feature_dim: int = 64
    selection_fraction: float = 0.3
    growth_dataset: str = "fashion-mnist"
    growth_sizes: tuple = (500, 1000, 2000, 4000)
    growth_base_size: int = 1000
    growth_steps: tuple = (0, 1, 2, 5, 10)
    growth_repeats: int = 2        # absolute times: the fastest of these many epochs


def make_plan(quick: bool = False, **overrides: Any) -> BenchPlan:
    """The full plan, or the ``--quick`` plan (tiny sizes: it checks the machinery, not speed).

    Example:
        >>> make_plan(quick=True).selection_n
        100000
    """
    plan = BenchPlan()
    if quick:
        plan = replace(plan, quick=True, repeats=1, slow_repeats=1, epoch_repeats=1, warmup=False,
                       steps=2, pgd_dataset="digits", pgd_batch=64, epoch_dataset="digits", epoch_size=256,
                       small_size=160, aign_epochs=1, saad_size=64, fastpath_size=128, saad_steps=2, selection_n=100_000,
                       selection_epochs=10, feature_dim=16, growth_dataset="digits",
                       growth_sizes=(128, 256), growth_base_size=128, growth_steps=(0, 1, 2),
                       growth_repeats=1)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    bad = sorted(set(overrides) - set(BenchPlan.__dataclass_fields__))
    if bad:
        raise SamplewiseError(f"unknown bench setting(s): {', '.join(bad)}")
    plan = replace(plan, **overrides)
    if min(plan.repeats, plan.slow_repeats, plan.epoch_repeats, plan.growth_repeats) < 1:
        raise SamplewiseError("repeats must be >= 1")
    return plan


@dataclass
class Row:
    """One line of the bench table. ``target`` is ``(">=" | "<=", value)`` or None (report)."""

    name: str
    ours: float | None
    reference: float | None
    ratio: float | None
    unit: str
    measure: str
    target: tuple | None = None
    notes: str = ""
    skipped: bool = False
    absolute: bool = False   # the target applies to ``ours`` (seconds), not to ``ratio``

    def status(self) -> str:
        if self.skipped:
            return "skipped"
        if self.target is None:
            return "report"
        value = self.ours if self.absolute else self.ratio
        if value is None or not math.isfinite(value):
            return "fail"
        op, bound = self.target
        return "pass" if (value >= bound if op == ">=" else value <= bound) else "fail"

    def to_dict(self) -> dict:
        target = None if self.target is None else f"{self.target[0]} {self.target[1]:g}" + \
            (" s" if self.absolute else "")
        return {"name": self.name, "ours": _clean(self.ours), "reference": _clean(self.reference),
                "ratio": _clean(self.ratio), "unit": self.unit, "measure": self.measure,
                "target": target or "report", "status": self.status(), "notes": self.notes}


def _clean(v: float | None) -> float | None:
    if v is None or not math.isfinite(float(v)):
        return None
    return float(f"{float(v):.6g}")


# ---------------------------------------------------------------------------- timing helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int,
                device: torch.device = torch.device("cpu")) -> dict[str, list[float]]:
    """Seconds of each function per repeat, run in turn; the order is reversed every other repeat.

    Example:
        >>> t = interleaved({"a": lambda: None, "b": lambda: None}, 3)
        >>> len(t["a"]), len(t["b"])
        (3, 3)
    """
    names = list(fns)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            _sync(device)
            t0 = time.perf_counter()
            fns[n]()
            _sync(device)
            out[n].append(time.perf_counter() - t0)
    return out


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over repeats of ``num[i] / den[i]``."""
    return statistics.median(a / b for a, b in zip(num, den))


def _median_time(fn: Callable[[], Any], n: int, device: torch.device) -> float:
    return statistics.median(interleaved({"f": fn}, n, device)["f"])


def machine_facts() -> dict:
    """Versions, threads and CPU facts recorded with every bench result."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    facts = {"samplewise": __version__, "python": platform.python_version(),
             "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
             "torch": str(torch.__version__), "numpy": np.__version__,
             "torch_threads": torch.get_num_threads(),
             "torch_interop_threads": torch.get_num_interop_threads(),
             "cpu_count": os.cpu_count(), "cpu_affinity": affinity,
             "mkldnn": bool(torch.backends.mkldnn.is_available()),
             "cuda": torch.cuda.is_available(), "torchattacks": None}
    try:
        import torchvision
        facts["torchvision"] = torchvision.__version__
    except ImportError:
        facts["torchvision"] = None
    ta = _torchattacks()
    if ta is not None:
        facts["torchattacks"] = getattr(ta, "__version__", "unknown")
    if hasattr(os, "getloadavg"):
        facts["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return facts


def _torchattacks():
    try:
        import torchattacks
    except ImportError:
        return None
    return torchattacks


# ---------------------------------------------------------------------------- shared pieces
class _Context:
    """What the items share: the plan, the device, a dataset cache and fallback notes."""

    def __init__(self, plan: BenchPlan, device: str | torch.device):
        self.plan, self.device = plan, torch.device(device)
        self._cache: dict[tuple, tuple[DataBundle, str]] = {}

    def data(self, name: str, size: int | None) -> tuple[DataBundle, str]:
        """``(bundle, note)``; Fashion-MNIST falls back to digits (with a note) when absent."""
        key = (name, size)
        if key not in self._cache:
            self._cache[key] = _load(name, size)
        return self._cache[key]

    def model(self, bundle: DataBundle, seed: int = 0, **kw) -> nn.Module:
        torch.manual_seed(seed)
        return create_model("cnn-small", bundle.card, **kw).to(self.device)

    def cfg(self, bundle: DataBundle, objective: str, epochs: int = 1, steps: int = 0) -> TrainConfig:
        return TrainConfig(dataset=bundle.card.name, model="cnn-small", objective=objective,
                           epochs=epochs, batch_size=self.plan.batch_size, attack_steps=steps,
                           eval_n=32, monitor_steps=0, progress=False, device=str(self.device))


def _load(name: str, size: int | None) -> tuple[DataBundle, str]:
    note = ""
    try:
        bundle = _sized(name, size)
    except SamplewiseError as exc:
        if name != "fashion-mnist":
            raise
        note = (f"Fashion-MNIST absent ({str(exc).splitlines()[0][:90]}); digits used instead "
                "(apt-get install dataset-fashion-mnist)")
        log.warning("bench: %s", note)
        name, bundle = "digits", _sized("digits", size)
    return bundle, note


def _sized(name: str, size: int | None) -> DataBundle:
    full = load_dataset(name)
    if size is None or size >= len(full.train):
        return full
    return load_dataset(name, train_size=int(size))


def _objective(name: str, bundle: DataBundle, steps: int, **kw):
    card = bundle.card
    return build_objective(name, eps=card.eps, alpha=card.alpha, steps=steps, **kw)


def _fit_epoch(ctx: _Context, bundle: DataBundle, model: nn.Module, objective: str, steps: int,
               hooks: Sequence[Hook] = (), epochs: int = 1, **obj_kw) -> float:
    """Train; return the mean loop seconds per epoch as fit records them (no monitor, no hooks'
    end-of-epoch work)."""
    res = fit(model, bundle, _objective(objective, bundle, steps, **obj_kw),
              ctx.cfg(bundle, objective, epochs, steps), hooks=list(hooks), device=ctx.device)
    return sum(m["seconds"] for m in res.metrics) / len(res.metrics)


def _batch(bundle: DataBundle, n: int, device: torch.device, split: str = "test"):
    s = getattr(bundle, split)
    n = min(n, len(s))
    return s.x[:n].to(device).float().div_(255.0), s.y[:n].to(device)


# ---------------------------------------------------------------------------- 1. PGD throughput
def bench_pgd(ctx: _Context) -> list[Row]:
    """PGD-k samples per second: :func:`samplewise.attacks.pgd` vs ``torchattacks.PGD``."""
    p = ctx.plan
    bundle, note = ctx.data(p.pgd_dataset, None)
    card = bundle.card
    model = ctx.model(bundle)
    x, y = _batch(bundle, p.pgd_batch, ctx.device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    name = f"pgd-{p.steps} throughput"
    measure = f"samples/s, ours / torchattacks.PGD ({card.name}, batch {len(y)}, cnn-small)"
    ours = lambda: pgd(model, x, y, eps=card.eps, alpha=card.alpha, steps=p.steps,  # noqa: E731
                       generator=gen)
    ta = _torchattacks()
    fns = {"ours": ours}
    if ta is not None:
        attack = ta.PGD(model, eps=card.eps, alpha=card.alpha, steps=p.steps, random_start=True)
        fns["ref"] = lambda: attack(x, y)
    if p.warmup:
        interleaved(fns, 1, ctx.device)
    t = interleaved(fns, max(2, p.repeats), ctx.device)
    ours_tp = len(y) / statistics.median(t["ours"])
    if ta is None:
        return [Row(name, ours_tp, None, None, "samples/s", measure, (">=", 1.0),
                    _join(NO_TORCHATTACKS, note), skipped=True)]
    return [Row(name, ours_tp, len(y) / statistics.median(t["ref"]), paired_ratio(t["ref"], t["ours"]),
                "samples/s", measure, (">=", 1.0),
                _join(f"median of {max(2, p.repeats)} interleaved repeats", note))]


def _join(*parts: str) -> str:
    return "; ".join(s for s in parts if s)


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
    ta = _torchattacks()
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


def bench_epoch(ctx: _Context) -> list[Row]:
    """A pgd-at epoch of fit() vs DataLoader + per-sample transforms + PGD + SGD step."""
    from .data import InMemoryLoader
    p = ctx.plan
    bundle, note = ctx.data(p.epoch_dataset, p.epoch_size)
    init = copy.deepcopy(ctx.model(bundle).state_dict())
    used = {}

    def fresh() -> nn.Module:
        m = ctx.model(bundle)
        m.load_state_dict(init)
        return m

    def ours():
        fit(fresh(), bundle, _objective("pgd-at", bundle, p.steps),
            ctx.cfg(bundle, "pgd-at", 1, p.steps), device=ctx.device)

    def ref():
        used["pgd"] = reference_epoch(fresh(), bundle, steps=p.steps, batch_size=p.batch_size,
                                      device=ctx.device)

    t = interleaved({"ours": ours, "ref": ref}, p.epoch_repeats, ctx.device)
    what = f"{bundle.card.name} {len(bundle.train)} samples, cnn-small, batch {p.batch_size}, PGD-{p.steps}"
    rows = [Row("pgd-at epoch", statistics.median(t["ours"]), statistics.median(t["ref"]),
                paired_ratio(t["ref"], t["ours"]), "s/epoch",
                f"speed-up: reference / ours seconds per epoch ({what})", (">=", 1.5),
                _join(f"reference: DataLoader(num_workers=0) + per-sample torchvision transforms "
                      f"+ {used['pgd']} + SGD step; ours: fit() wall time with its defaults "
                      f"(NHWC layout for conv nets on the CPU); median of "
                      f"{p.epoch_repeats} interleaved repeats", note))]

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
    rows.append(Row("data path of an epoch", statistics.median(t["ours"]), statistics.median(t["ref"]),
                    paired_ratio(t["ref"], t["ours"]), "s/epoch",
                    f"speed-up: DataLoader + per-sample transforms / InMemoryLoader ({bundle.card.name} "
                    f"{len(bundle.train)} samples, crop+flip as the card says)", None,
                    _join("loading and augmentation only, no model", note)))
    return rows


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
    out = {"fb": _median_time(fb, n, device), "f": _median_time(f, n, device)}
    model.eval()
    fi()
    out["fi"] = _median_time(fi, n, device)
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


def epoch_pass_times(ctx: _Context, bundle: DataBundle, model: nn.Module,
                     reps: int | None = None) -> list[tuple[int, dict[str, float]]]:
    """``[(batches, pass_times)]`` for an epoch's full batches and its last partial one.

    The batches come from the loader :func:`fit` uses (same augmentation), in the memory layout
    :func:`fit` uses (NHWC for conv nets on the CPU), because the layout matters: oneDNN picks
    a different convolution path for each (here up to ~2x apart).
    """
    from .data import InMemoryLoader
    n, b = len(bundle.train), ctx.plan.batch_size
    reps = reps or (5 if ctx.plan.warmup else 2)
    card = bundle.card
    loader = InMemoryLoader(bundle.train, batch_size=b, augment=card.crop_pad > 0 or card.flip,
                            card=card, device=ctx.device)
    batches = list(loader)
    out = [(n // b, batches[0])] if n >= b else []
    if n % b:
        out.append((1, batches[-1]))
    fmt = torch.contiguous_format
    if use_channels_last(ctx.cfg(bundle, "standard"), model, ctx.device):  # as fit() will run it
        fmt = torch.channels_last
        model.to(memory_format=fmt)
    return [(count, pass_times(model, x.contiguous(memory_format=fmt), y, ctx.device, reps))
            for count, (x, y, _) in out]


def ideal_epoch_seconds(times: list[tuple[int, dict[str, float]]], objective: str, k: int,
                        strict: bool = False) -> float:
    """Ideal seconds of an epoch from :func:`epoch_pass_times` (see :data:`IDEAL_PASSES`)."""
    return sum(count * ideal_batch_seconds(objective, k, t, strict) for count, t in times)


def bench_efficiency(ctx: _Context) -> list[Row]:
    """Ideal epoch time over fit()'s measured epoch time for standard, pgd-at and trades."""
    p = ctx.plan
    bundle, note = ctx.data(p.small_dataset, p.small_size)
    rows = []
    for name in ("standard", "pgd-at", "trades"):
        k = 0 if name == "standard" else p.steps
        ideal, strict, measured = [], [], []
        if p.warmup:
            _fit_epoch(ctx, bundle, ctx.model(bundle), name, k)
        for _ in range(p.slow_repeats):
            model = ctx.model(bundle)
            times = epoch_pass_times(ctx, bundle, model)
            ideal.append(ideal_epoch_seconds(times, name, k))
            strict.append(ideal_epoch_seconds(times, name, k, strict=True))
            measured.append(_fit_epoch(ctx, bundle, model, name, k))
        ratio = paired_ratio(ideal, measured)
        rows.append(Row(f"efficiency {name}", statistics.median(measured), statistics.median(ideal),
                        ratio, "s/epoch",
                        f"ideal / measured epoch; ideal = {IDEAL_PASSES[name]} per batch "
                        f"({bundle.card.name} {len(bundle.train)} samples, batch {p.batch_size}, k={k})",
                        (">=", 0.85),
                        _join(f"strict ideal (attack steps as input-only backwards): "
                              f"{paired_ratio(strict, measured):.3f}" if k else "",
                              f"measured: fit()'s epoch loop seconds; median of {p.slow_repeats}",
                              note)))
    return rows


# ---------------------------------------------------------------------------- 4. AIGN overhead
def bench_aign(ctx: _Context) -> list[Row]:
    """Standard training with and without an AIGN tracker (online and checkpoint mode)."""
    try:
        from .hardness.trackers import EvalPassTracker, OnlineAIGNTracker
    except ImportError as exc:
        return [Row(f"aign {m} overhead", None, None, None, "s", "tracked / untracked", None,
                    f"skipped: samplewise.hardness.trackers not importable ({exc})", skipped=True)
                for m in ("online", "checkpoint")]
    p = ctx.plan
    bundle, note = ctx.data(p.small_dataset, p.small_size)

    def run(hooks: Callable[[], list]) -> Callable[[], None]:
        return lambda: fit(ctx.model(bundle), bundle, _objective("standard", bundle, 0),
                           ctx.cfg(bundle, "standard", p.aign_epochs), hooks=hooks(),
                           device=ctx.device)

    fns = {"none": run(list), "online": run(lambda: [OnlineAIGNTracker(p=2)]),
           "checkpoint": run(lambda: [EvalPassTracker(p=2)])}
    if p.warmup:
        interleaved(fns, 1, ctx.device)
    t = interleaved(fns, p.repeats, ctx.device)
    what = (f"{bundle.card.name} {len(bundle.train)} samples, {p.aign_epochs} standard epoch(s), "
            f"fit() wall time")
    targets = {"online": ((("<=", 1.05)), "OnlineAIGNTracker: norms of the input gradients the "
                          "backward computes anyway (inputs require grad)"),
               "checkpoint": (None, "EvalPassTracker: one eval-mode forward + input-gradient pass "
                              "over the clean training set per tracked epoch")}
    return [Row(f"aign {mode} overhead", statistics.median(t[mode]), statistics.median(t["none"]),
                paired_ratio(t[mode], t["none"]), "s/run", f"tracked / untracked ({what})",
                target, _join(how, f"median of {p.repeats}", note))
            for mode, (target, how) in targets.items()]


# ---------------------------------------------------------------------------- 5. SAAD
DISTILL_METHODS = ("ard", "rslad", "iad", "adaad", "igdm", "saad", "saad-measured")


def bench_saad(ctx: _Context) -> list[Row]:
    """Epoch time of saad against the methods it builds on (igdm, adaad; the target), and of
    every distillation method relative to rslad (reported; docs/distillation.md lists them)."""
    p = ctx.plan
    bundle, note = ctx.data(p.small_dataset, p.saad_size)
    teacher = ctx.model(bundle, seed=1, width=2).eval()
    methods = DISTILL_METHODS

    def run(name: str) -> Callable[[], float]:
        kw = {"warmup": 0.0} if name == "iad" else {}  # time iad with its introspection term on
        return lambda: _fit_epoch(ctx, bundle, ctx.model(bundle), name, p.saad_steps,
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
                        _join(why, note)))
    return rows


# ---------------------------------------------------------------------------- 6. selection
def synthetic_table(n: int, feature_dim: int, classes: int = 1000, seed: int = 0):
    """A score table of ``n`` samples with every score and float16 features (ImageNet-sized)."""
    from .hardness.scorefile import SCORE_NAMES, ScoreTable
    rng = np.random.default_rng(seed)
    scores = {s: rng.random(n, dtype=np.float32) for s in SCORE_NAMES}
    scores["forgetting"] = rng.integers(0, 20, n).astype(np.float32)
    feats = np.empty((n, feature_dim), dtype=np.float16)
    for s in range(0, n, 1 << 16):
        feats[s:s + (1 << 16)] = rng.standard_normal((min(1 << 16, n - s), feature_dim), np.float32)
    return ScoreTable(index=np.arange(n), labels=rng.integers(0, classes, n), scores=scores,
                      features=feats, meta={"dataset": "synthetic", "num_train": n})


def bench_selection(ctx: _Context) -> list[Row]:
    """Seconds of :func:`samplewise.coreset.select` per selector on ``selection_n`` scores."""
    from .coreset import SELECTORS, select
    p = ctx.plan
    t0 = time.perf_counter()
    table = synthetic_table(p.selection_n, p.feature_dim)
    log.info("bench: synthetic score table of %d samples built in %.1f s", p.selection_n,
             time.perf_counter() - t0)
    n, frac, reps = p.selection_n, p.selection_fraction, p.slow_repeats
    rows = []

    def timed(method: str, repeats: int = reps, **kw) -> float:
        return statistics.median(interleaved({"s": lambda: select(table, method, frac, **kw)},
                                             repeats)["s"])

    for method in SELECTORS.names():
        measure = f"seconds to select {frac:g} of {n:,} scores"
        if method == "kcenter":
            rows.append(Row(f"select {method}", None, None, None, "s", measure, ("<=", 1.0),
                            f"skipped: greedy k-center is O(N k D) = {n:,} x {int(n * frac):,} x "
                            f"{p.feature_dim} distance terms, hours on a CPU at this N", skipped=True,
                            absolute=True))
        elif method in SCORE_SELECTORS:
            rows.append(Row(f"select {method}", timed(method), None, None, "s", measure, ("<=", 1.0),
                            f"absolute seconds, median of {reps}; no reference", absolute=True))
        elif method == "moderate":
            rows.append(Row(f"select {method}", timed(method, 1), None, None, "s",
                            f"{measure}, D={p.feature_dim} float16 features", ("<=", 10.0),
                            "absolute seconds, one run; no reference", absolute=True))
        else:
            rows.append(Row(f"select {method}", None, None, None, "s", measure, None,
                            "skipped: not a selector this bench knows the cost of", skipped=True))
    rows.append(Row("select easycore class-balanced", timed("easycore", 1, class_balanced=True),
                    None, None, "s", f"seconds to select {frac:g} of {n:,} scores in 1000 classes",
                    None, "absolute seconds, one run; no reference", absolute=True))
    del table
    rows += _matrix_rows(p)
    return rows


def _matrix_rows(p: BenchPlan) -> list[Row]:
    """Memory of an N x E per-epoch score matrix: float16 vs float32, and a memory-mapped .npy."""
    from numpy.lib.format import open_memmap
    n, e = p.selection_n, p.selection_epochs
    shape = f"{n:,} x {e} epochs"
    rows = [Row("score matrix bytes", n * e * 2, n * e * 4, 0.5, "bytes",
                f"float16 / float32 bytes of a {shape} AIGN matrix", None,
                "float16 keeps 11 significant bits (relative error <= 4.9e-4)")]
    rng = np.random.default_rng(0)
    chunk = 1 << 16
    mem = np.empty((n, e), dtype=np.float16)
    for s in range(0, n, chunk):
        mem[s:s + chunk] = rng.random((min(chunk, n - s), e), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="samplewise-bench-") as tmp:
        path = Path(tmp) / "aign_per_epoch.npy"
        t0 = time.perf_counter()
        mm = open_memmap(path, mode="w+", dtype=np.float16, shape=(n, e))
        for s in range(0, n, chunk):
            mm[s:s + chunk] = mem[s:s + chunk]
        mm.flush()
        write_s = time.perf_counter() - t0
        size = path.stat().st_size
        del mm
        mm = np.load(path, mmap_mode="r")
        window = slice(max(0, e - 10), e)

        def window_mean(a):
            out = np.empty(n, dtype=np.float32)
            for s in range(0, n, chunk):
                out[s:s + chunk] = a[s:s + chunk, window].astype(np.float32).mean(1)
            return out

        t = interleaved({"mm": lambda: window_mean(mm), "mem": lambda: window_mean(mem)},
                        p.slow_repeats)
        del mm
    rows.append(Row("score matrix memmap window mean", statistics.median(t["mm"]),
                    statistics.median(t["mem"]), paired_ratio(t["mm"], t["mem"]), "s",
                    f"mean over the last 10 epochs of a {shape} float16 matrix: memory-mapped .npy "
                    f"(numpy open_memmap) / in memory", None,
                    f"file {size:,} bytes, written in {write_s:.2f} s; pages come from the page "
                    "cache here (a cold read goes at disk speed)"))
    return rows


# ---------------------------------------------------------------------------- 7. fast paths
def _bf16_hardware() -> bool | None:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def bench_fastpaths(ctx: _Context) -> list[Row]:
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
            res = fit(ctx.model(bundle), bundle, _objective("pgd-at", bundle, p.steps), cfg,
                      device=ctx.device)
            secs.setdefault(tuple(sorted(kw.items())), []).append(res.metrics[0]["seconds"])
        return go

    rows = [_layout_row(ctx, bundle, note)]
    secs: dict[tuple, list[float]] = {}
    variants = {tuple(sorted(kw.items())): kw for pair in pairs.values() for kw in pair}
    fns = {str(key): run(kw) for key, kw in variants.items()}
    if p.warmup:
        interleaved(fns, 1, ctx.device)
        secs.clear()
    interleaved(fns, p.slow_repeats, ctx.device)
    hw = _bf16_hardware()
    default_nhwc = ctx.cfg(bundle, "pgd-at").channels_last is None and ctx.device.type == "cpu"
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
        rows.append(Row(f"pgd-at epoch {name}", statistics.median(t), statistics.median(base),
                        paired_ratio(base, t), "s/epoch",
                        f"speed-up: {vs} / {name} seconds per epoch ({bundle.card.name} "
                        f"{len(bundle.train)} samples, PGD-{p.steps}, {ctx.device.type})", None,
                        _join(why, f"fit() epoch seconds, median of {p.slow_repeats}; accuracy "
                              "effects not measured here", note)))
    return rows


def _layout_row(ctx: _Context, bundle: DataBundle, note: str) -> Row:
    """A 1-channel batch as the crop/flip gather makes it (channel stride H*W) against the same
    values with channel stride 1, which oneDNN runs on its channels-last convolution path."""
    from .data import InMemoryLoader
    name, measure = "1-channel batch layout", "speed-up of a bare forward+backward: channel " \
        "stride H*W (augmented batch) / channel stride 1"
    x, y, _ = next(iter(InMemoryLoader(bundle.train, batch_size=ctx.plan.batch_size, augment=True,
                                       card=bundle.card, device=ctx.device)))
    if x.shape[1] != 1:
        return Row(name, None, None, None, "s/batch", measure, None,
                   f"skipped: {bundle.card.name} has {x.shape[1]} channels", skipped=True)
    b, _, h, w = x.shape
    gathered = x.reshape(b, h * w).as_strided(x.shape, (h * w, h * w, w, 1))
    strided = x.reshape(b, h, w, 1).permute(0, 3, 1, 2)  # a free view: channel stride 1
    model = ctx.model(bundle)
    reps = max(3, 3 * ctx.plan.slow_repeats)
    t = {k: [] for k in ("hw", "one")}
    for _ in range(reps):  # interleaved, one pass each
        for key, xx in (("hw", gathered), ("one", strided)):
            t[key].append(pass_times(model, xx, y, ctx.device, 1)["fb"])
    return Row(name, statistics.median(t["one"]), statistics.median(t["hw"]),
               paired_ratio(t["hw"], t["one"]), "s/batch", f"{measure} ({bundle.card.name}, batch "
               f"{len(y)}, cnn-small)", None,
               _join("same values, same shape; only the stride of the size-1 channel dimension "
                     "differs (InMemoryLoader's augmented batches have H*W, its plain ones 1)",
                     f"median of {reps}", note))


# ---------------------------------------------------------------------------- the whole bench
BENCHES: dict[str, Callable[[_Context], list[Row]]] = {
    "pgd": bench_pgd, "epoch": bench_epoch, "efficiency": bench_efficiency, "aign": bench_aign,
    "saad": bench_saad, "selection": bench_selection, "fastpaths": bench_fastpaths}


def parse_items(text: str | Sequence[str] | None) -> list[str]:
    """``"pgd,epoch"`` / ``["pgd"]`` / ``"all"`` / ``"none"`` -> validated item names.

    Example:
        >>> parse_items("epoch, pgd")
        ['pgd', 'epoch']
    """
    if text is None or text == "all":
        return list(ITEMS)
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if names == ["none"]:
        return []
    bad = [s for s in names if s not in ITEMS]
    if bad:
        raise SamplewiseError(f"unknown bench item(s) {', '.join(bad)}; choose from: "
                              f"{', '.join(ITEMS)}, all, none")
    return [s for s in ITEMS if s in names]


def run_bench(*, quick: bool = False, items: str | Sequence[str] | None = None,
              growth: bool = False, device: str = "cpu", json_path: str | os.PathLike | None = None,
              plot_path: str | os.PathLike | None = None, threads: int | None = None,
              **plan_overrides: Any) -> dict:
    """Run the bench items (and optionally the cost growth); return the result dict.

    Args:
        quick: tiny sizes and 1-2 repeats (seconds; checks the machinery, not the speed).
        items: which items (:data:`ITEMS`; default all).
        growth: also measure :func:`measure_growth`; ``plot_path`` draws it.
        json_path: write the result there (atomically).
        threads: ``torch.set_num_threads`` for the run (default: leave it).
        **plan_overrides: :class:`BenchPlan` fields, e.g. ``repeats=3``, ``epoch_size=2000``.

    Returns:
        ``{"format", "machine", "plan", "rows": [row dicts], "growth"?, "seconds"}``.

    Example:
        >>> res = run_bench(quick=True, items="pgd,selection", json_path="bench.json")  # doctest: +SKIP
    """
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise SamplewiseError(f"threads must be >= 1, got {threads}")
    chosen = parse_items(items)
    plan = make_plan(quick, **plan_overrides)
    check_device(str(device))
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _run(plan, chosen, growth, device, json_path, plot_path)
    finally:
        torch.set_num_threads(before)


def _warm_imports() -> None:
    """Pay one-time costs before any timing: the first optimiser imports torch._dynamo (seconds)."""
    torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)


@contextlib.contextmanager
def _quiet(*names: str):
    """Silence per-epoch and per-selection INFO lines while timing (the bench logs its own)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _run(plan: BenchPlan, chosen: list[str], growth: bool, device, json_path, plot_path) -> dict:
    _warm_imports()
    with _quiet("samplewise.train", "samplewise.coreset", "samplewise.data.datasets"):
        return _run_items(plan, chosen, growth, device, json_path, plot_path)


def _run_items(plan: BenchPlan, chosen: list[str], growth: bool, device, json_path,
               plot_path) -> dict:
    ctx = _Context(plan, device)
    start = time.perf_counter()
    result: dict[str, Any] = {"format": FORMAT, "machine": machine_facts(), "plan": asdict(plan),
                              "device": str(ctx.device), "items": chosen, "rows": []}
    for i, name in enumerate(chosen, 1):
        log.info("bench [%d/%d] %s ...", i, len(chosen), name)
        t0 = time.perf_counter()
        rows = BENCHES[name](ctx)
        for row in rows:
            d = row.to_dict()
            d["item"] = name
            result["rows"].append(d)
            log.info("bench   %s: %s (%s)", row.name, _fmt(d["ratio"]) if d["ratio"] is not None
                     else _fmt(d["ours"]), d["status"])
        log.info("bench [%d/%d] %s done in %.1f s", i, len(chosen), name, time.perf_counter() - t0)
    if growth or plot_path is not None:
        log.info("bench: cost growth ...")
        result["growth"] = measure_growth(ctx)
        if plot_path is not None:
            plot_growth(result["growth"], plot_path)
            result["growth"]["plot"] = str(plot_path)
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()] \
        if hasattr(os, "getloadavg") else None
    if json_path is not None:
        io.write_json(json_path, result)
    return result


# ---------------------------------------------------------------------------- cost growth
def measure_growth(ctx: _Context) -> dict:
    """``pgd-at`` epoch seconds vs dataset size (at ``plan.steps``) and vs PGD steps (at
    ``growth_base_size`` samples), with the ideal ``(k+1)`` bare passes per batch for reference."""
    p = ctx.plan
    sizes, secs, notes = [], [], []

    def epoch(bundle: DataBundle, k: int) -> float:  # the fastest of growth_repeats epochs
        t = min(_fit_epoch(ctx, bundle, ctx.model(bundle), "pgd-at", k)
                for _ in range(p.growth_repeats))
        log.info("bench growth: %d samples, PGD-%d: %.2f s/epoch", len(bundle.train), k, t)
        return t

    for size in p.growth_sizes:
        bundle, note = ctx.data(p.growth_dataset, size)
        notes.append(note)
        sizes.append(len(bundle.train))
        secs.append(epoch(bundle, p.steps))
    bundle, note = ctx.data(p.growth_dataset, p.growth_base_size)
    times = epoch_pass_times(ctx, bundle, ctx.model(bundle), 9 if p.warmup else 2)
    step_secs = [epoch(bundle, k) for k in p.growth_steps]
    ideal = [ideal_epoch_seconds(times, "pgd-at", k) for k in p.growth_steps]
    slope = float(np.dot(sizes, secs) / np.dot(sizes, sizes))  # least squares through the origin
    per_step = np.polyfit(list(p.growth_steps), step_secs, 1) if len(p.growth_steps) > 1 else [0, 0]
    return {"dataset": bundle.card.name, "objective": "pgd-at", "batch_size": p.batch_size,
            "sizes": sizes, "size_steps": p.steps, "size_seconds": secs,
            "seconds_per_1000_samples": slope * 1000,
            "steps": list(p.growth_steps), "steps_size": len(bundle.train), "steps_seconds": step_secs,
            "steps_ideal_seconds": ideal, "seconds_per_step": float(per_step[0]),
            "seconds_at_0_steps": float(per_step[1]), "repeats": p.growth_repeats,
            "notes": _join("each point: the fastest of `repeats` epochs; ideal: median bare passes",
                           *sorted(set(notes + [note])))}


def plot_growth(growth: dict, path: str | os.PathLike) -> Path:
    """Two panels: epoch seconds vs samples and vs PGD steps; written atomically as PNG."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    n, s = np.array(growth["sizes"]), np.array(growth["size_seconds"])
    a.plot(n, s, "o-", label=f"measured (PGD-{growth['size_steps']})")
    a.plot([0, n.max()], [0, growth["seconds_per_1000_samples"] * n.max() / 1000], "--",
           label="linear through 0")
    a.set_xlabel("training samples")
    a.set_ylabel("seconds per epoch")
    a.set_title("vs dataset size")
    a.legend()
    k = np.array(growth["steps"])
    b.plot(k, growth["steps_seconds"], "o-", label="measured (fit)")
    b.plot(k, growth["steps_ideal_seconds"], "s--", label="ideal: (k+1) bare fwd+bwd")
    b.set_xlabel("PGD steps k")
    b.set_ylabel("seconds per epoch")
    b.set_title(f"vs attack steps ({growth['steps_size']} samples)")
    b.legend()
    fig.suptitle(f"pgd-at epoch cost, cnn-small on {growth['dataset']}, batch {growth['batch_size']}")
    fig.tight_layout()
    path = Path(path)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- output
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        v = float(v)
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def format_table(rows: Sequence[dict], markdown: bool = False) -> str:
    """The rows as a plain-text (or Markdown) table: name, ours, reference, ratio, target,
    status, notes."""
    head = ["name", "ours", "reference", "unit", "ratio", "target", "status", "notes"]
    body = [[r["name"], _fmt(r["ours"]), _fmt(r["reference"]), r["unit"], _fmt(r["ratio"]),
             r["target"], r["status"], r["notes"]] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(c.replace("|", "/") for c in row) + " |"
                                  for row in body])
    short = [row[:-1] for row in [head] + body]
    width = [max(len(r[i]) for r in short) for i in range(len(head) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, width)).rstrip() for row in short)


def format_growth(growth: dict) -> str:
    lines = [f"pgd-at epoch cost on {growth['dataset']} (batch {growth['batch_size']}):"]
    lines += [f"  {n:>6} samples, PGD-{growth['size_steps']}: {s:8.2f} s"
              for n, s in zip(growth["sizes"], growth["size_seconds"])]
    lines += [f"  {growth['steps_size']:>6} samples, PGD-{k:<2}: {s:8.2f} s (ideal {i:.2f} s)"
              for k, s, i in zip(growth["steps"], growth["steps_seconds"],
                                 growth["steps_ideal_seconds"])]
    return "\n".join(lines)
