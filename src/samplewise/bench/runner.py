"""Running the bench: item selection, run_bench, the JSON, the cost growth measurement and plot,
and the table formatting."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .. import io
from ..config import check_device
from ..data import DataBundle
from ..errors import SamplewiseError
from .core import (FORMAT, ITEMS, BenchContext, BenchPlan, Row, fit_epoch_seconds, join_notes,
                   machine_facts, make_plan)
from .epochs import bench_epoch, bench_pgd
from .fastpaths import bench_fastpaths
from .selection import bench_selection
from .training import (bench_aign, bench_efficiency, bench_saad, epoch_pass_times,
                       ideal_epoch_seconds)


log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- the whole bench
BENCHES: dict[str, Callable[[BenchContext], list[Row]]] = {
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
    ctx = BenchContext(plan, device)
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
def measure_growth(ctx: BenchContext) -> dict:
    """``pgd-at`` epoch seconds vs dataset size (at ``plan.steps``) and vs PGD steps (at
    ``growth_base_size`` samples), with the ideal ``(k+1)`` bare passes per batch for reference."""
    p = ctx.plan
    sizes, secs, notes = [], [], []

    def epoch(bundle: DataBundle, k: int) -> float:  # the fastest of growth_repeats epochs
        t = min(fit_epoch_seconds(ctx, bundle, ctx.model(bundle), "pgd-at", k)
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
            "notes": join_notes("each point: the fastest of `repeats` epochs; ideal: median bare "
                                "passes", *sorted(set(notes + [note])))}


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
