"""The demo's stages: :func:`plan` (one :class:`Stage` per run directory), the scoring stage and
its coreset subsets, and the per-stage record read back from a finished run."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .. import io
from ..config import TrainConfig, validate_train
from ..errors import SamplewiseError
from ..train import CHECKPOINT, METRICS, Hook
from .settings import ATLAS_DIR, METHODS, SELECTORS, STAGE_FILE, DemoSettings


@dataclass
class Stage:
    """One run of the demo: its directory name, its training config and what it is."""

    name: str
    kind: str                 # scoring | coreset | teacher | student
    cfg: TrainConfig
    label: str                # the row label in the tables
    selector: Optional[str] = None
    method: Optional[str] = None


def _base(s: DemoSettings, data_root: Optional[str], device: Optional[str]) -> TrainConfig:
    return TrainConfig(dataset=s.dataset, train_size=s.train_size, lr=s.lr,
                       batch_size=s.batch_size, attack_steps=s.attack_steps, eval_n=s.eval_n,
                       eval_steps=s.eval_steps, monitor_steps=s.monitor_steps, seed=s.seed,
                       threads=s.threads, data_root=data_root, device=device or "cpu",
                       progress=False)


def plan(s: DemoSettings, out: Path, *, data_root: Optional[str] = None,
         device: Optional[str] = None) -> list[Stage]:
    """The demo's stages in order (each trains in ``out/<name>``; pass an absolute ``out``:
    the teacher and subset paths recorded in the runs' configs are built from it)."""
    base = _base(s, data_root, device)
    rep = dataclasses.replace
    stages = [Stage("scoring", "scoring", rep(base, model=s.scoring_model,
                                              model_args=dict(s.scoring_model_args),
                                              objective="standard", epochs=s.scoring_epochs),
                    f"standard training, full data ({s.scoring_model})")]
    coreset = rep(base, model=s.coreset_model, model_args=dict(s.coreset_model_args),
                  objective=s.coreset_objective, epochs=s.coreset_epochs)
    stages.append(Stage("coreset-full", "coreset", coreset, "full data", selector="full"))
    for name in SELECTORS:
        stages.append(Stage(f"coreset-{name}", "coreset",
                            rep(coreset, subset=str(out / "subsets" / f"{name}.npy")),
                            name, selector=name))
    teacher = rep(base, model=s.teacher_model, model_args=dict(s.teacher_model_args),
                  objective=s.teacher_objective, epochs=s.teacher_epochs)
    stages.append(Stage("teacher", "teacher", teacher, "teacher"))
    student = rep(base, model=s.student_model, model_args=dict(s.student_model_args),
                  epochs=s.student_epochs, weight_decay=s.student_weight_decay,
                  lr=s.student_lr)
    stages.append(Stage("student-alone", "student", rep(student, objective="pgd-at"),
                        "student alone", method="pgd-at (no teacher)"))
    for m in METHODS:
        stages.append(Stage(f"distill-{m}", "student",
                            rep(student, objective=m, teacher=str(out / "teacher")),
                            m, method=m))
    for st in stages:
        validate_train(st.cfg)
    return stages


class _EpochTicks(Hook):
    """Advances the demo's progress bar after every epoch of a stage."""

    def __init__(self, bar):
        self.bar, self.count = bar, 0

    def on_epoch_end(self, model, epoch):
        self.count += 1
        self.bar.update(1)


def _finished(run_dir: Path) -> bool:
    return (run_dir / "result.json").is_file() and (run_dir / "model.pt").is_file()


def _started(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT).is_file() or (run_dir / "result.json").is_file()


def _last_metric(run_dir: Path, key: str) -> Optional[float]:
    for line in reversed(io.read_jsonl(run_dir / METRICS)):
        if key in line:
            return float(line[key])
    return None


def _run_scoring(st: Stage, run_dir: Path, ticks: Hook):
    from ..hardness.scoring import SCORES_FILE, score
    resume = any((run_dir / f).exists() for f in (CHECKPOINT, "result.json", SCORES_FILE))
    return score(st.cfg, run_dir, resume=resume, hooks=[ticks])


def _make_atlas(run_dir: Path, out: Path) -> dict:
    """The hardness atlas of the scoring run in ``out/atlas`` (written once: it depends on the
    score file only); returns its files (relative to ``out``) and its reading."""
    from ..atlas import atlas, write_atlas
    from ..hardness.scoring import SCORES_FILE
    target = out / ATLAS_DIR
    if not (target / "atlas.json").is_file():
        write_atlas(atlas(run_dir / SCORES_FILE), target)
    summary = json.loads((target / "atlas.json").read_text())
    datamap = target / "datamap.png"
    return {"report": f"{ATLAS_DIR}/atlas.md", "grid": f"{ATLAS_DIR}/grid_{summary['score']}.png",
            "datamap": f"{ATLAS_DIR}/datamap.png" if datamap.is_file() else None,
            "reading": summary["reading"]}


def _make_subsets(table, s: DemoSettings, out: Path) -> None:
    """One subset per selector at ``s.fraction`` (a fresh selection must equal a saved one)."""
    from ..coreset import select, summarize_selection
    from ..formats.subset import read_subset, write_subset
    for name in SELECTORS:
        path = out / "subsets" / f"{name}.npy"
        idx = select(table, name, s.fraction, seed=s.seed)
        if path.is_file():
            if not np.array_equal(read_subset(path).indices, idx):
                raise SamplewiseError(f"{path} differs from a fresh {name} selection of this "
                                      "demo's scores; choose another --out")
            continue
        summary = summarize_selection(table, idx)
        summary.update({"selector": name, "selection_seed": s.seed})
        write_subset(path, idx, summary)


def _stage_record(st: Stage, run_dir: Path, seconds: float) -> dict:
    """The stage's numbers; its wall time is that of the call that finished it (kept in
    ``<stage>/demo_stage.json``, so a resumed demo reports the same seconds)."""
    result = json.loads((run_dir / "result.json").read_text())
    marker = run_dir / STAGE_FILE
    if marker.is_file():
        seconds = float(json.loads(marker.read_text())["seconds"])
    else:
        io.write_json(marker, {"stage": st.name, "seconds": round(seconds, 2)})
    rec = {"run": st.name, "label": st.label, "model": st.cfg.model,
           "model_args": dict(st.cfg.model_args), "objective": st.cfg.objective,
           "epochs": result.get("epochs", st.cfg.epochs), "n_train": result.get("n_train"),
           "clean_acc": float(result["clean_acc"]), "robust_acc": float(result["robust_acc"]),
           "eval": result.get("eval"), "train_seconds": result.get("train_seconds"),
           "seconds": round(seconds, 2)}
    if st.kind == "student" and st.method in METHODS:
        rec["tas"] = _last_metric(run_dir, "tas")
    return rec
