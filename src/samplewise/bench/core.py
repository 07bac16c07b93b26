"""Shared pieces of the bench: the plan, the rows, interleaved timing and paired ratios, machine
facts, and the context (data cache, models, configs) every item uses."""

from __future__ import annotations

import logging
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..cpu import allocator_state
from ..data import DataBundle, InMemoryLoader, load_dataset
from ..errors import SamplewiseError
from ..models import create_model
from ..objectives import build_objective
from ..runinfo import __version__
from ..hooks import Hook
from ..models.layout import run_in_nhwc
from ..train import fit


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
    aign_epochs: int = 3
    aign_repeats: int = 9          # the online target (<= 1.05) is a few-percent effect: more repeats
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
                       small_size=160, aign_epochs=1, aign_repeats=1, saad_size=64, fastpath_size=128, saad_steps=2, selection_n=100_000,
                       selection_epochs=10, feature_dim=16, growth_dataset="digits",
                       growth_sizes=(128, 256), growth_base_size=128, growth_steps=(0, 1, 2),
                       growth_repeats=1)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    bad = sorted(set(overrides) - set(BenchPlan.__dataclass_fields__))
    if bad:
        raise SamplewiseError(f"unknown bench setting(s): {', '.join(bad)}")
    plan = replace(plan, **overrides)
    if min(plan.repeats, plan.slow_repeats, plan.epoch_repeats, plan.growth_repeats,
           plan.aign_repeats) < 1:
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


def speedup_row(name: str, ours: Sequence[float], ref: Sequence[float], unit: str, measure: str,
                target: tuple | None, notes: str) -> Row:
    """A row whose ratio is a speed-up: medians of both sides' seconds and the median of the
    paired ratios ``ref[i] / ours[i]``."""
    return Row(name, statistics.median(ours), statistics.median(ref), paired_ratio(ref, ours), unit,
               measure, target, notes)


def median_seconds(fn: Callable[[], Any], n: int, device: torch.device) -> float:
    """Median seconds of ``n`` calls of ``fn`` (synchronised on CUDA)."""
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
             "allocator": allocator_state(),
             "cuda": torch.cuda.is_available(), "torchattacks": None}
    try:
        import torchvision
        facts["torchvision"] = torchvision.__version__
    except ImportError:
        facts["torchvision"] = None
    ta = import_torchattacks()
    if ta is not None:
        facts["torchattacks"] = getattr(ta, "__version__", "unknown")
    if hasattr(os, "getloadavg"):
        facts["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return facts


def import_torchattacks():
    """The ``torchattacks`` module, or None when it is not installed (the reference rows then
    fall back or say how to get it)."""
    try:
        import torchattacks
    except ImportError:
        return None
    return torchattacks


# ---------------------------------------------------------------------------- shared pieces
class BenchContext:
    """What the items share: the plan, the device, a dataset cache and fallback notes.

    Every item function takes one as its first argument; :func:`~samplewise.bench.runner.run_bench`
    builds it once per run."""

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

    def fit_layout(self, bundle: DataBundle, model: nn.Module) -> torch.memory_format:
        """The memory layout :func:`fit` gives ``model`` here (NHWC for conv nets on the CPU)."""
        return torch.channels_last if run_in_nhwc(self.cfg(bundle, "standard").channels_last,
                                                  model, self.device) else torch.contiguous_format

    def augmented_batch(self, bundle: DataBundle) -> tuple[torch.Tensor, torch.Tensor]:
        """The first crop/flip batch of :class:`InMemoryLoader`, as :func:`fit` would draw it."""
        x, y, _ = next(iter(InMemoryLoader(bundle.train, batch_size=self.plan.batch_size,
                                           augment=True, card=bundle.card, device=self.device)))
        return x, y

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


def card_objective(name: str, bundle: DataBundle, steps: int, **kw):
    """The objective ``name`` at the dataset card's ε and α with ``steps`` attack steps."""
    card = bundle.card
    return build_objective(name, eps=card.eps, alpha=card.alpha, steps=steps, **kw)


def fit_epoch_seconds(ctx: BenchContext, bundle: DataBundle, model: nn.Module, objective: str,
                      steps: int, hooks: Sequence[Hook] = (), epochs: int = 1, **obj_kw) -> float:
    """Train; return the mean loop seconds per epoch as fit records them (no monitor, no hooks'
    end-of-epoch work)."""
    res = fit(model, bundle, card_objective(objective, bundle, steps, **obj_kw),
              ctx.cfg(bundle, objective, epochs, steps), hooks=list(hooks), device=ctx.device)
    return sum(m["seconds"] for m in res.metrics) / len(res.metrics)


def first_batch(bundle: DataBundle, n: int, device: torch.device, split: str = "test"):
    """The first ``n`` samples of ``split`` as float inputs in [0, 1] and labels, on ``device``."""
    s = getattr(bundle, split)
    n = min(n, len(s))
    return s.x[:n].to(device).float().div_(255.0), s.y[:n].to(device)


def join_notes(*parts: str) -> str:
    """The non-empty notes joined by ``"; "``."""
    return "; ".join(s for s in parts if s)
