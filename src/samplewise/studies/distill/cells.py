"""The distillation study's cells (teachers x methods x seeds, plus the student alone) and their
training and held-out TAS (``transfer.json``)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional, Sequence

from ... import io, runlock
from ...errors import SamplewiseError
from .. import grid
from ..grid import Cell, StudyConfig
from .config import NONE, TRANSFER_FILE, TRANSFER_STEPS, distill_spec, method_base, needs_teacher
from .teachers import attack_settings, teacher_path

log = logging.getLogger(__name__)


def distill_cells(cfg: StudyConfig, out_dir) -> list[Cell]:
    """Teachers × teacher methods × seeds, plus one ``none-<method>-s<seed>`` cell per method
    that takes no teacher (the student alone); sorted by id."""
    common = dict(eval_n=cfg.eval.n, eval_steps=cfg.eval.pgd_steps)
    items = []
    for params in grid.expand(cfg, distill_spec(cfg.grid["teacher"])):
        if needs_teacher(params["method"]):
            items.append((params, dataclasses.replace(
                method_base(cfg, params["method"]), objective=params["method"], seed=params["seed"],
                teacher=teacher_path(cfg, out_dir, params["teacher"]), **common)))
    for method in cfg.grid["method"]:
        if not needs_teacher(method):
            for seed in cfg.seeds:
                params = {"teacher": NONE, "method": method, "seed": seed}
                items.append((params, dataclasses.replace(method_base(cfg, method), objective=method,
                                                          seed=seed, teacher=None, **common)))
    return grid.make_cells(items, distill_spec(cfg.grid["teacher"]).axes)


def training_tas(path: Path) -> Optional[float]:
    """The last epoch's training TAS: ``tas`` of the last metrics.jsonl line that has one (the
    mean over the lines of that epoch when an epoch has several), else result.json's."""
    lines = []
    metrics = path / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("tas") is not None:
                lines.append(rec)
    if lines:
        last = lines[-1].get("epoch")
        vals = [float(r["tas"]) for r in lines if r.get("epoch") == last] if last is not None \
            else [float(lines[-1]["tas"])]
        return sum(vals) / len(vals)
    res = path / "result.json"
    if res.is_file():
        per_epoch = [t for t in json.loads(res.read_text()).get("tas_per_epoch") or []
                     if t is not None]
        if per_epoch:
            return float(per_epoch[-1])
    return None


def cell_transfer(cfg: StudyConfig, cell: Cell, path: Path, *,
                  device: Optional[str] = None) -> Optional[dict]:
    """Held-out TAS of a finished distillation cell, cached as ``transfer.json``."""
    if cell.cfg.teacher is None or not grid.is_finished(path):
        return None
    file = path / TRANSFER_FILE
    if file.is_file():
        return json.loads(file.read_text())
    from ...models import load_model, load_teacher
    from ...transfer import transfer_rate

    device = device or cell.cfg.device
    bundle, rcfg = attack_settings(cfg)
    result = json.loads((path / "result.json").read_text())
    eps = result.get("eval", {}).get("eps", rcfg.eps)
    teacher = load_teacher(cell.cfg.teacher, card=bundle.card, device=device)
    student = load_model(path, device=device)
    res = transfer_rate(teacher, student, bundle.test, eps=eps, alpha=rcfg.alpha,
                        steps=TRANSFER_STEPS, n=cfg.eval.n, batch_size=cfg.eval.batch_size,
                        device=device)
    io.write_json(file, res)
    return res


def transfer_cells(cfg: StudyConfig, cells: Sequence[Cell], out_dir, *,
                   device: Optional[str] = None) -> None:
    """Add the missing transfer.json of finished cells (skipping cells another process holds)."""
    for cell in cells:
        path = grid.cell_dir(out_dir, cell)
        if cell.cfg.teacher is None or (path / TRANSFER_FILE).is_file() \
                or not grid.is_finished(path):
            continue
        lock = runlock.try_hold(path)  # the cell directory's own lock (as run_cells takes it)
        if lock is None:
            continue
        with lock:
            try:
                cell_transfer(cfg, cell, path, device=device)
            except SamplewiseError as exc:
                log.error("transfer of cell %s failed: %s", cell.id, exc)
