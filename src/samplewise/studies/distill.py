"""The distillation study (methods.md §4, issue #4): does student robustness follow the
teacher's robustness or the transferability of the student's adversarial examples (TAS)?

Teachers × distillation methods × seeds, each cell one student run (``OUT/cells/<id>``) with
``cfg.teacher`` set to its teacher. A teacher is either given (``path:`` a model file, a run
directory or ``robustbench:ID``) or trained by the study first (``train:`` TrainConfig keys over
``base``, in ``OUT/teachers/<name>``; resumable, trained by whichever process needs it first,
under a lock). The config::

    study: distill
    base: {dataset: digits, model: mlp, epochs: 2, ...}     # the student recipe (TrainConfig)
    teachers:
      - {name: wide-trades, train: {model: cnn-small, model_args: {width: 4}, objective: trades}}
      - {name: given, path: runs/teacher/model.pt}
    grid: {methods: [ard, rslad, saad, pgd-at], teachers: [wide-trades, given]}  # teachers: all
    seeds: [0, 1, 2]
    eval: {n: 1000, pgd_steps: 20, autoattack: false, autoattack_n: 200}

A method that takes no teacher (e.g. ``pgd-at``) is the student trained alone: one cell per
seed with teacher ``none`` (``none-pgd-at-s0``), the reference line of the plots.

Per teacher: clean / PGD / AutoAttack (when asked for) accuracy on the fixed test slices, cached
in ``OUT/teachers/<name>/eval.json``. Per cell: the grid's clean / PGD / AutoAttack, the
training TAS (mean ``tas`` of the last epoch in ``metrics.jsonl``) and the held-out TAS of
:func:`samplewise.transfer.transfer_rate` (PGD-10 by the student on the ``eval.n`` test slice,
cached as ``transfer.json``).

Example:
    >>> summary = run_distill_study("configs/study-distill-digits.yaml", "runs/distill")
    >>> summary["results"]            # runs/distill/results.md, .csv, .json and the plots
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .. import io
from ..config import TrainConfig, validate_train
from ..errors import SamplewiseError
from ..objectives import OBJECTIVES
from . import grid, tables
from .grid import Axis, Cell, EvalSpec, StudyConfig, StudySpec, read_source

log = logging.getLogger(__name__)

TITLE = "Distillation study"
NONE = "none"                  # the teacher column of student-alone cells
TEACHERS_DIR = "teachers"
TEACHER_EVAL = "eval.json"
TRANSFER_FILE = "transfer.json"
TRANSFER_STEPS = 10
RESERVED = ("seed", "eval_n", "eval_steps", "objective", "teacher")
METRICS = ("clean_acc", "pgd_acc", "autoattack_acc", "tas_train", "tas_test")


@dataclass(frozen=True)
class TeacherSpec:
    """One entry of ``teachers``: a given model (``path``) or one the study trains (``train``)."""

    name: str
    path: Optional[str] = None
    train: Optional[dict] = None


def _spec(teacher_names: Sequence[str]) -> StudySpec:
    return StudySpec(name="distill",
                     axes=(Axis("teachers", "teacher", str, default=tuple(teacher_names)),
                           Axis("methods", "method", str)),
                     reserved=RESERVED)


def needs_teacher(method: str) -> bool:
    return bool(getattr(OBJECTIVES.get(method), "needs_teacher", False))


def _teachers(raw_list, base_raw: dict) -> tuple[list[TeacherSpec], dict[str, TrainConfig]]:
    if not isinstance(raw_list, list) or not raw_list:
        raise SamplewiseError("study config 'teachers' must be a non-empty list of "
                              "{name: ..., path: ...} or {name: ..., train: {...}}")
    specs, train_cfgs = [], {}
    for k, entry in enumerate(raw_list):
        where = f"teachers[{k}]"
        if not isinstance(entry, dict):
            raise SamplewiseError(f"study config {where} must be a mapping, got {entry!r}")
        unknown = sorted(set(map(str, entry)) - {"name", "path", "train"})
        if unknown:
            raise SamplewiseError(f"unknown key(s) {', '.join(unknown)} in study config {where}; "
                                  "valid keys: name, path, train")
        name = entry.get("name")
        if not isinstance(name, str) or not name or name != grid._id_part(name) or name == NONE:
            raise SamplewiseError(f"study config {where}.name must be a non-empty name of "
                                  f"letters, digits, '.', '+', '=', '_', '-' (not '{NONE}'), "
                                  f"got {name!r}")
        path, train = entry.get("path"), entry.get("train")
        if (path is None) == (train is None):
            raise SamplewiseError(f"study config teacher '{name}' needs exactly one of path "
                                  "and train")
        if path is not None and (not isinstance(path, str) or not path.strip()):
            raise SamplewiseError(f"study config teacher '{name}': path must be a model file, "
                                  f"run directory or robustbench:ID, got {path!r}")
        if train is not None:
            if not isinstance(train, dict):
                raise SamplewiseError(f"study config teacher '{name}': train must be a mapping "
                                      "of TrainConfig keys")
            if "teacher" in train:
                raise SamplewiseError(f"study config teacher '{name}': a trained teacher cannot "
                                      "itself have a teacher")
            merged = {k: v for k, v in base_raw.items()}
            merged.update(train)
            tcfg = validate_train(grid._section(TrainConfig, merged, f"teachers.{name}.train"))
            if needs_teacher(tcfg.objective):
                raise SamplewiseError(f"study config teacher '{name}': objective "
                                      f"{tcfg.objective!r} needs a teacher itself")
            train_cfgs[name] = tcfg
        specs.append(TeacherSpec(name=name, path=path, train=train))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SamplewiseError(f"study config: two teachers share a name: {names}")
    return specs, train_cfgs


def load_distill_config(source) -> StudyConfig:
    """Parse and check a distillation study config; ``cfg.sections`` holds ``teachers`` (the
    :class:`TeacherSpec` list) and ``teacher_train`` (name -> TrainConfig of trained ones)."""
    if isinstance(source, StudyConfig):
        return source
    path, raw = read_source(source)
    if not isinstance(raw, dict):
        raise SamplewiseError("a study config must be a mapping")
    if raw.get("study", "distill") != "distill":
        raise SamplewiseError(f"this is a '{raw.get('study')}' study config, not 'distill'")
    base_raw = raw.get("base") or {}
    if not isinstance(base_raw, dict):
        raise SamplewiseError("study config 'base' must be a mapping of TrainConfig keys")
    specs, train_cfgs = _teachers(raw.get("teachers"), base_raw)
    rest = {k: v for k, v in raw.items() if k != "teachers"}
    cfg = grid.load_study(rest, _spec([s.name for s in specs]))
    known = {s.name for s in specs}
    for name in cfg.grid["teacher"]:
        if name not in known:
            raise SamplewiseError(f"grid.teachers names '{name}', which is not in teachers "
                                  f"({', '.join(sorted(known))})")
    for method in cfg.grid["method"]:
        OBJECTIVES.get(method)
    return dataclasses.replace(cfg, sections={"teachers": specs, "teacher_train": train_cfgs},
                               raw=json.loads(json.dumps(raw, default=str)), source=path)


# ----------------------------------------------------------------------------- teachers
def teacher_dir(out_dir, name: str) -> Path:
    return Path(out_dir).resolve() / TEACHERS_DIR / name


def teacher_spec(cfg: StudyConfig, name: str) -> TeacherSpec:
    return next(s for s in cfg.sections["teachers"] if s.name == name)


def teacher_path(cfg: StudyConfig, out_dir, name: str) -> str:
    """What a student's ``cfg.teacher`` is set to: the given path, or the study's run dir."""
    spec = teacher_spec(cfg, name)
    return spec.path if spec.path is not None else str(teacher_dir(out_dir, name))


def teacher_ready(cfg: StudyConfig, out_dir, name: str) -> bool:
    spec = teacher_spec(cfg, name)
    return spec.path is not None or grid.is_finished(teacher_dir(out_dir, name))


def teacher_train_config(cfg: StudyConfig, name: str) -> TrainConfig:
    return dataclasses.replace(cfg.sections["teacher_train"][name], eval_n=cfg.eval.n,
                               eval_steps=cfg.eval.pgd_steps)


def ensure_teacher(cfg: StudyConfig, out_dir, name: str, *, device: Optional[str] = None) -> str:
    """Train (or resume) a ``train:`` teacher unless finished (one process at a time), then
    make sure its evaluation is cached; returns the teacher's path."""
    from ..runs import run_training
    from ..train import CHECKPOINT

    spec = teacher_spec(cfg, name)
    if spec.train is not None:
        path = teacher_dir(out_dir, name)
        with grid.file_lock(Path(out_dir) / "locks" / f"teacher-{name}.lock", wait=True):
            if not grid.is_finished(path):
                tcfg = teacher_train_config(cfg, name)
                if tcfg.threads:
                    import torch
                    torch.set_num_threads(tcfg.threads)
                resume = (path / CHECKPOINT).is_file()
                log.info("teacher %s: %s in %s", name, "resuming" if resume else "training", path)
                run_training(tcfg, path, resume=resume, device=device)
    teacher_eval(cfg, out_dir, name, device=device)
    return teacher_path(cfg, out_dir, name)


def _attack_settings(cfg: StudyConfig):
    from ..runs import load_bundle, resolve_attack

    bundle = load_bundle(cfg.base)
    return bundle, resolve_attack(cfg.base, bundle)


def _eval_key(cfg: StudyConfig, rcfg: TrainConfig, path: str) -> dict:
    ev = cfg.eval
    return {"teacher": path, "eps": rcfg.eps, "alpha": rcfg.alpha, "n": ev.n,
            "pgd_steps": ev.pgd_steps, "autoattack": ev.autoattack,
            "autoattack_n": ev.autoattack_n, "autoattack_version": ev.autoattack_version,
            "autoattack_attacks": ev.autoattack_attacks}


def teacher_eval(cfg: StudyConfig, out_dir, name: str, *,
                 device: Optional[str] = None) -> Optional[dict]:
    """Clean / PGD (/ AutoAttack) accuracy of a ready teacher on the study's fixed test slices,
    cached in ``OUT/teachers/<name>/eval.json`` (recomputed when the settings change); None
    when the teacher is not trained yet."""
    if not teacher_ready(cfg, out_dir, name):
        return None
    from ..evaluate import evaluate
    from ..models import load_teacher

    device = device or cfg.base.device
    file = teacher_dir(out_dir, name) / TEACHER_EVAL
    with grid.file_lock(Path(out_dir) / "locks" / f"teacher-eval-{name}.lock", wait=True):
        bundle, rcfg = _attack_settings(cfg)
        key = _eval_key(cfg, rcfg, teacher_path(cfg, out_dir, name))
        if file.is_file():
            cached = json.loads(file.read_text())
            if cached.get("settings") == key:
                return cached
        model = load_teacher(key["teacher"], card=bundle.card, device=device)
        pgd = evaluate(model, bundle.test, attack="pgd", eps=rcfg.eps, alpha=rcfg.alpha,
                       steps=cfg.eval.pgd_steps, n=cfg.eval.n, batch_size=cfg.eval.batch_size,
                       device=device)
        record = {"settings": key, "clean_acc": pgd["clean_acc"], "pgd_acc": pgd["robust_acc"],
                  "autoattack_acc": None}
        if cfg.eval.autoattack:
            aa = evaluate(model, bundle.test, attack="autoattack", eps=rcfg.eps,
                          n=cfg.eval.autoattack_n, batch_size=cfg.eval.batch_size, device=device,
                          aa_version=cfg.eval.autoattack_version,
                          aa_attacks=cfg.eval.autoattack_attacks)
            record["autoattack_acc"] = aa["robust_acc"]
        io.write_json(file, record)
        return record


# ----------------------------------------------------------------------------- cells
def distill_cells(cfg: StudyConfig, out_dir) -> list[Cell]:
    """Teachers × teacher methods × seeds, plus one ``none-<method>-s<seed>`` cell per method
    that takes no teacher (the student alone); sorted by id."""
    common = dict(eval_n=cfg.eval.n, eval_steps=cfg.eval.pgd_steps)
    items = []
    for params in grid.expand(cfg, _spec(cfg.grid["teacher"])):
        if needs_teacher(params["method"]):
            items.append((params, dataclasses.replace(
                cfg.base, objective=params["method"], seed=params["seed"],
                teacher=teacher_path(cfg, out_dir, params["teacher"]), **common)))
    for method in cfg.grid["method"]:
        if not needs_teacher(method):
            for seed in cfg.seeds:
                params = {"teacher": NONE, "method": method, "seed": seed}
                items.append((params, dataclasses.replace(cfg.base, objective=method, seed=seed,
                                                          teacher=None, **common)))
    return grid.make_cells(items, _spec(cfg.grid["teacher"]).axes)


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
    from ..models import load_model, load_teacher
    from ..transfer import transfer_rate

    device = device or cell.cfg.device
    bundle, rcfg = _attack_settings(cfg)
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
        with grid.file_lock(Path(out_dir) / "locks" / f"{cell.id}.lock", wait=False) as mine:
            if mine:
                try:
                    cell_transfer(cfg, cell, path, device=device)
                except SamplewiseError as exc:
                    log.error("transfer of cell %s failed: %s", cell.id, exc)


# ----------------------------------------------------------------------------- results
def distill_rows(cfg: StudyConfig, cells: Sequence[Cell], out_dir,
                 teacher_evals: dict) -> tuple[list[dict], list[str]]:
    rows, missing = [], []
    for cell in sorted(cells, key=lambda c: c.id):
        path = grid.cell_dir(out_dir, cell)
        row = tables.cell_row(cell, path)
        if row is None:
            missing.append(cell.id)
            continue
        te = teacher_evals.get(cell.params["teacher"]) or {}
        tr = json.loads((path / TRANSFER_FILE).read_text()) \
            if (path / TRANSFER_FILE).is_file() else {}
        row.update({"teacher_clean": te.get("clean_acc"), "teacher_pgd": te.get("pgd_acc"),
                    "teacher_aa": te.get("autoattack_acc"),
                    "tas_train": training_tas(path) if cell.cfg.teacher else None,
                    "tas_test": tr.get("tas"),
                    "tas_test_given_fooled": tr.get("tas_given_student_fooled")})
        rows.append(row)
    return rows, missing


def _num(v, pct=True) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.2f}" if pct else f"{v:.3f}"


def _mean_pm(mean, std, n, pct=True) -> str:
    if mean is None:
        return "–"
    if pct:
        return tables._pct(mean, std, n)
    return f"{mean:.3f}" + (f" ± {std:.3f}" if n > 1 else "")


def distill_markdown(summary: Sequence[dict], ev: EvalSpec, eps, missing) -> str:
    aa = ev.autoattack
    which = "" if ev.autoattack_seeds is None else \
        f" (seeds {', '.join(map(str, ev.autoattack_seeds))} only)"
    lines = [f"# {TITLE}", "",
             f"Accuracy (%) on the fixed test slice at ε = {eps:g}: clean and PGD-{ev.pgd_steps} "
             f"on {ev.n} samples" + (f", {ev.autoattack_label()} on {ev.autoattack_n}{which}"
                                     if aa else "") +
             ". Student columns: mean ± std over seeds (ddof = 1). `TAS train`: fraction of the "
             "student's training adversarial examples that also fool the teacher, last epoch; "
             f"`TAS test`: the same for PGD-{TRANSFER_STEPS} by the student on the {ev.n} test "
             f"samples. Teacher `{NONE}`: the student trained alone.", ""]
    heads = ["teacher", "teacher clean", f"teacher PGD-{ev.pgd_steps}",
             *(["teacher AA"] if aa else []), "method", "seeds", "clean",
             f"PGD-{ev.pgd_steps}", *(["AutoAttack"] if aa else []), "TAS train", "TAS test"]
    lines += ["| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
    for s in summary:
        c = [s["teacher"], _num(s.get("teacher_clean")), _num(s.get("teacher_pgd")),
             *([_num(s.get("teacher_aa"))] if aa else []), s["method"], str(s["seeds"])]
        for m in ("clean_acc", "pgd_acc", *(["autoattack_acc"] if aa else [])):
            c.append(_mean_pm(s[f"{m}_mean"], s[f"{m}_std"], s[f"{m}_n"]))
        for m in ("tas_train", "tas_test"):
            c.append(_mean_pm(s[f"{m}_mean"], s[f"{m}_std"], s[f"{m}_n"], pct=False))
        lines.append("| " + " | ".join(c) + " |")
    if missing:
        shown = ", ".join(missing[:12]) + (", ..." if len(missing) > 12 else "")
        lines += ["", f"{len(missing)} cell(s) not finished yet: {shown} (all in results.json)."]
    return "\n".join(lines) + "\n"


def write_distill_results(cfg: StudyConfig, cells: Sequence[Cell], out_dir,
                          teacher_evals: dict) -> dict:
    out = Path(out_dir)
    rows, missing = distill_rows(cfg, cells, out, teacher_evals)
    aa = cfg.eval.autoattack
    columns = ["cell", "teacher", "teacher_clean", "teacher_pgd", *(["teacher_aa"] if aa else []),
               "method", "seed", "clean_acc", "pgd_acc", *(["autoattack_acc"] if aa else []),
               "tas_train", "tas_test", "tas_test_given_fooled", "n_train", "epochs", "seconds"]
    summary = tables.summarize(rows, ["teacher", "method"], METRICS)
    for s in summary:
        te = teacher_evals.get(s["teacher"]) or {}
        s.update({"teacher_clean": te.get("clean_acc"), "teacher_pgd": te.get("pgd_acc"),
                  "teacher_aa": te.get("autoattack_acc")})
    _, rcfg = _attack_settings(cfg)
    io.write_text(out / "results.csv", tables.results_csv(rows, columns))
    io.write_text(out / "results.md", distill_markdown(summary, cfg.eval, rcfg.eps, missing))
    record = {"study": "distill", "title": TITLE, "cells_total": len(cells),
              "cells_finished": len(rows), "missing": missing, "columns": columns,
              "eval": {**dataclasses.asdict(cfg.eval), "eps": rcfg.eps, "alpha": rcfg.alpha,
                       "transfer_steps": TRANSFER_STEPS},
              "teachers": {name: {"path": teacher_path(cfg, out, name), **(te or {})}
                           for name, te in teacher_evals.items()},
              "notes": {"tas_train": "mean 'tas' of the last epoch in the cell's metrics.jsonl",
                        "tas_test": f"transfer.transfer_rate: PGD-{TRANSFER_STEPS} by the "
                                    f"student on the eval.n test slice",
                        "std": "sample standard deviation over seeds (ddof=1; 0 with one seed)",
                        "seconds": "sum of the cell's epoch times (training only)"},
              "config": cfg.raw, "rows": rows, "summary": summary}
    io.write_json(out / "results.json", record)
    return record


# ----------------------------------------------------------------------------- plots
def distill_plots(summary: Sequence[dict], out_dir, ev: EvalSpec) -> list[Path]:
    """Student robustness against teacher robustness (one line per method, the student alone
    as dashed lines) and against the TAS (one marker per method, one point per teacher)."""
    import numpy as np

    from .plots import new_figure, save_figure

    out = Path(out_dir)
    use_aa = ev.autoattack and any(s.get("autoattack_acc_mean") is not None for s in summary
                                   if s["teacher"] != NONE)
    metric = "autoattack_acc" if use_aa else "pgd_acc"
    label = ev.autoattack_label() if use_aa else f"PGD-{ev.pgd_steps}"
    t_metric = "teacher_aa" if use_aa else "teacher_pgd"
    seeds = max((s["seeds"] for s in summary), default=0)
    note = f"mean ± std over {seeds} seed{'s' if seeds != 1 else ''}"
    distilled = [s for s in summary if s["teacher"] != NONE and s.get(f"{metric}_mean") is not None]
    alone = [s for s in summary if s["teacher"] == NONE and s.get(f"{metric}_mean") is not None]
    methods = list(dict.fromkeys(s["method"] for s in summary))
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    markers = "osD^v<>pP*Xh"
    paths = []

    fig, (ax,) = new_figure(width=6.0, height=4.4)
    for m in methods:
        pts = sorted((s[t_metric], s[f"{metric}_mean"], s[f"{metric}_std"]) for s in distilled
                     if s["method"] == m and s.get(t_metric) is not None)
        if pts:
            x, y, sd = (np.array(v, dtype=float) for v in zip(*pts))
            ax.errorbar(100 * x, 100 * y, yerr=100 * sd, marker="o", capsize=3, label=m,
                        color=colors[m])
    for s in alone:
        ax.axhline(100 * s[f"{metric}_mean"], color=colors[s["method"]], linestyle="--",
                   linewidth=1.2, label=f"{s['method']} alone (no teacher)")
    ax.set_xlabel(f"teacher {label} accuracy (%)")
    ax.set_ylabel(f"student {label} accuracy (%)")
    ax.set_title(f"Student vs teacher robustness\n{label} on the test slice; {note}",
                 fontsize="medium")
    _finish(ax)
    paths.append(save_figure(fig, out / "student_vs_teacher_robustness.png"))

    fig, (ax,) = new_figure(width=6.0, height=4.4)
    tas_key = "tas_test" if any(s.get("tas_test_mean") is not None for s in distilled) \
        else "tas_train"
    for i, m in enumerate(methods):
        pts = [(s[f"{tas_key}_mean"], s[f"{metric}_mean"], s["teacher"]) for s in distilled
               if s["method"] == m and s.get(f"{tas_key}_mean") is not None]
        if pts:
            ax.scatter([p[0] for p in pts], [100 * p[1] for p in pts], marker=markers[i % 12],
                       color=colors[m], label=m, s=36)
            for x, y, name in pts:
                ax.annotate(name, (x, 100 * y), fontsize="x-small", xytext=(3, 3),
                            textcoords="offset points")
    which = f"held-out TAS (PGD-{TRANSFER_STEPS} by the student on the test slice)" \
        if tas_key == "tas_test" else "training TAS (last epoch)"
    ax.set_xlabel(which)
    ax.set_ylabel(f"student {label} accuracy (%)")
    ax.set_title(f"Student robustness vs transferability\none point per teacher; {note}",
                 fontsize="medium")
    _finish(ax)
    paths.append(save_figure(fig, out / "student_robustness_vs_tas.png"))
    return paths


def _finish(ax) -> None:
    """Grid, and a legend when anything was labelled."""
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


# ----------------------------------------------------------------------------- the study
def run_distill_study(config, out_dir, cells=None, *, device: Optional[str] = None) -> dict:
    """Run (or continue) a distillation study and write its results and plots.

    Args:
        config: a YAML path, a mapping or a parsed :class:`StudyConfig`.
        out_dir: the study directory (``teachers/``, ``cells/``, results, plots).
        cells: ``"i/n"`` to run only the i-th of n shares of the cells; the teachers this share
            needs are trained first (one process per teacher, under a lock). Without it, every
            unfinished cell runs (and every teacher is trained).
        device: overrides the config's device.

    Returns:
        ``cells_total``, ``cells_finished``, ``missing``, ``ran`` (id -> status), ``failed``,
        ``teachers`` (name -> cached evaluation or None), ``results`` and ``plots``.
    """
    cfg = load_distill_config(config)
    share = grid.parse_share(cells)
    out = grid.study_dir(out_dir)
    all_cells = distill_cells(cfg, out)
    todo = grid.share_of(all_cells, share)
    for cell in todo:  # a changed config is one clear error before anything runs
        grid._check_same_settings(cell, grid.cell_dir(out, cell))
    wanted = [t for t in cfg.grid["teacher"]
              if any(c.params["teacher"] == t for c in todo)] if share else \
        list(cfg.grid["teacher"])
    for name in wanted:
        ensure_teacher(cfg, out, name, device=device)
    ran = grid.run_cells(all_cells, out, cfg.eval, share=share, device=device)
    transfer_cells(cfg, todo, out, device=device)
    teacher_evals = {name: teacher_eval(cfg, out, name, device=device)
                     for name in cfg.grid["teacher"]}
    record = write_distill_results(cfg, all_cells, out, teacher_evals)
    plots = distill_plots(record["summary"], out, cfg.eval) if record["rows"] else []
    return {"cells_total": record["cells_total"], "cells_finished": record["cells_finished"],
            "missing": record["missing"], "ran": ran,
            "failed": sorted(k for k, v in ran.items() if v.startswith("failed")),
            "teachers": teacher_evals,
            "results": [str(out / name) for name in tables.RESULTS],
            "plots": [str(p) for p in plots]}
