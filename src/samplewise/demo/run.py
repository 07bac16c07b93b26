"""The demo, top to bottom: :func:`run_demo` checks the dataset and the output directory,
:func:`plan` lays out one :class:`Stage` per run directory, each stage trains (the scoring stage
also writes the coreset subsets and the hardness atlas) and leaves a record, and
:func:`~samplewise.demo.report.write_outputs` turns the records into ``results.json``, the plots
and ``report.md``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Optional

import numpy as np

from .. import io, runlock
from ..checkpoint import CHECKPOINT, METRICS_FILE
from ..config import TrainConfig, validate_train
from ..errors import SamplewiseError
from ..hooks import Hook
from .report import assemble, write_outputs
from .settings import (ATLAS_DIR, DEMO_METHODS, DEMO_SELECTORS, FORMAT, LADDER_FILE,
                       RESULTS_FILE, SETTINGS_FILE, STAGE_FILE, DemoSettings, Stage, demo_settings,
                       model_label)

log = logging.getLogger(__name__)

#: loggers whose per-epoch lines the progress bar replaces (unless ``verbose``)
_CHATTY = ("samplewise.train", "samplewise.runs", "samplewise.hardness", "samplewise.coreset")


def run_demo(out_dir, *, dataset: str = "digits", quick: bool = False, resume: bool = False,
             device: Optional[str] = None, data_root: Optional[str] = None,
             progress: bool = True, verbose: bool = False,
             settings: Optional[DemoSettings] = None) -> dict:
    """Run (or resume) the demo into ``out_dir``; return the results (also ``results.json``).

    Args:
        out_dir: the demo directory (one run directory per stage, subsets, report, plots).
        dataset: ``digits`` (bundled) or ``fashion-mnist`` (Debian ``dataset-fashion-mnist``).
        quick: a tiny version (seconds) that exercises every stage; its numbers mean nothing.
        resume: skip finished stages, continue an interrupted one.
        device: torch device (default cpu).
        data_root: where torchvision datasets live (default ``$SAMPLEWISE_DATA``).
        progress: show a progress bar over the stages' epochs.
        verbose: keep the per-epoch log lines of every run.
        settings: explicit settings (default: :func:`demo_settings` of ``dataset``/``quick``).

    Returns:
        ``results.json``'s content, plus ``tables`` (the two Markdown tables) and ``paths``.

    Example:
        >>> r = run_demo("runs/demo", quick=True)
        >>> print(r["tables"]["coreset"])
    """
    s = settings or demo_settings(dataset, quick)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SamplewiseError(f"--out {out} exists and is not a directory")
    card = _check_dataset(s, data_root)
    if s.eps_ladder[-1] >= card.eps:
        raise SamplewiseError(f"the demo's eps_ladder {list(s.eps_ladder)} must stay below the "
                              f"{s.dataset} card's ε = {card.eps:g} (read at the card's ε anyway)")
    with runlock.hold(out):  # one demo per directory; each stage also locks its own run dir
        return _run_stages(s, out, resume=resume, device=device, data_root=data_root,
                           progress=progress, verbose=verbose)


def _run_stages(s: DemoSettings, out: Path, *, resume: bool, device: Optional[str],
                data_root: Optional[str], progress: bool, verbose: bool) -> dict:
    _check_settings(out, s, resume)
    stages = plan(s, out.resolve(), data_root=data_root, device=device)
    io.write_if_changed(out / SETTINGS_FILE,
                        io.json_text({"format": FORMAT, "settings": s.to_dict()}))

    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    import torch

    total = sum(st.cfg.epochs for st in stages)
    records: dict[str, dict] = {}
    table, atlas = None, None
    with contextlib.ExitStack() as stack:
        stack.callback(torch.set_num_threads, torch.get_num_threads())  # runs set s.threads
        if not verbose:
            stack.enter_context(_quiet(_CHATTY))
        stack.enter_context(logging_redirect_tqdm())
        bar = stack.enter_context(tqdm(total=total, unit="epoch", desc="demo", disable=None
                                       if progress else True, dynamic_ncols=True))
        for i, st in enumerate(stages, 1):
            bar.set_description(f"demo {i}/{len(stages)} {st.name}")
            run_dir = out / st.name
            done = _finished(run_dir) and (run_dir / STAGE_FILE).is_file()
            log.info("stage %d/%d %s: %s%s", i, len(stages), st.name, _describe(st),
                     " (finished: skipped)" if done else "")
            ticks = _EpochTicks(bar)
            t0 = time.perf_counter()
            if st.kind == "scoring":
                table = _run_scoring(st, run_dir, ticks)
                _make_subsets(table, s, out)
                atlas = _make_atlas(run_dir, out)
            else:
                from ..runs import run_training
                run_training(st.cfg, run_dir, resume=_started(run_dir), hooks=[ticks])
            bar.update(max(0, st.cfg.epochs - ticks.count))
            ladder = _ladder(st, run_dir, s, device) if st.kind == "coreset" else None
            seconds = time.perf_counter() - t0
            records[st.name] = _stage_record(st, run_dir, seconds, ladder)
            r = records[st.name]
            log.info("stage %d/%d %s: clean %.1f%%, PGD-%d %.1f%%%s (%.0f s)", i, len(stages),
                     st.name, 100 * r["clean_acc"], s.eval_steps, 100 * r["robust_acc"],
                     f", TAS {r['tas']:.3f}" if r.get("tas") is not None else "", r["seconds"])
    results = {**assemble(s, stages, records, table, out), "atlas": atlas}
    return write_outputs(results, table, out)


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
    for name in DEMO_SELECTORS:
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
    for m in DEMO_METHODS:
        stages.append(Stage(f"distill-{m}", "student",
                            rep(student, objective=m, teacher=str(out / "teacher")),
                            m, method=m))
    for st in stages:
        validate_train(st.cfg)
    return stages


def _base(s: DemoSettings, data_root: Optional[str], device: Optional[str]) -> TrainConfig:
    return TrainConfig(dataset=s.dataset, train_size=s.train_size, lr=s.lr,
                       batch_size=s.batch_size, attack_steps=s.attack_steps, eval_n=s.eval_n,
                       eval_steps=s.eval_steps, monitor_steps=s.monitor_steps, seed=s.seed,
                       threads=s.threads, data_root=data_root, device=device or "cpu",
                       progress=False)


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


def _run_scoring(st: Stage, run_dir: Path, ticks: Hook):
    from ..hardness.scoring import SCORES_FILE, score
    resume = any((run_dir / f).exists() for f in (CHECKPOINT, "result.json", SCORES_FILE))
    return score(st.cfg, run_dir, resume=resume, hooks=[ticks])


def _make_subsets(table, s: DemoSettings, out: Path) -> None:
    """One subset per selector at ``s.fraction`` (a fresh selection must equal a saved one)."""
    from ..coreset import select, summarize_selection
    from ..formats.subset import read_subset, write_subset
    for name in DEMO_SELECTORS:
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


def ladder_settings(s: DemoSettings) -> dict:
    """The settings every entry of a coreset stage's ``ladder.json`` was computed with."""
    return {"attack": "pgd", "steps": s.eval_steps, "alpha": "eps/4", "n": s.eval_n,
            "seed": s.seed}


def _ladder(st: Stage, run_dir: Path, s: DemoSettings, device: Optional[str]) -> list[dict]:
    """The stage model's PGD-``eval_steps`` accuracy (step ε/4, random start, seed ``s.seed``)
    on the fixed test slice at every radius of ``s.eps_ladder`` (:func:`_stage_record` adds the
    card's ε from ``result.json``). Each radius is written to ``<stage>/ladder.json`` as soon as
    it is made; a resumed demo reads it instead of attacking again."""
    from ..evaluate import evaluate
    from ..models import load_model
    from ..runs import load_bundle
    from ..threat import ThreatModel

    path, settings = run_dir / LADDER_FILE, ladder_settings(s)
    try:
        done = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        done = {}  # not the demo's own cache: recompute every radius
    radii = done.get("radii", {}) if isinstance(done, dict) and \
        done.get("settings") == settings else {}
    todo = [r for r in s.eps_ladder if str(r) not in radii]
    if todo:
        model, test = load_model(run_dir, device=device or "cpu"), load_bundle(st.cfg).test
        for r in todo:
            threat = ThreatModel.resolve(None, eps=r, steps=s.eval_steps)  # step r/4
            radii[str(r)] = evaluate(model, test, attack="pgd", threat=threat, n=s.eval_n,
                                     seed=s.seed, device=device or "cpu")
            io.write_json(path, {"settings": settings, "radii": radii})
    return [_ladder_entry(radii[str(r)]) for r in s.eps_ladder]


def _ladder_entry(res: dict) -> dict:
    """One rung of a stage's ladder: the radius, step and steps of an evaluation, and its
    robust accuracy."""
    return {**{k: res[k] for k in ("eps", "alpha", "steps")},
            "robust_acc": float(res["robust_acc"])}


def _stage_record(st: Stage, run_dir: Path, seconds: float,
                  ladder: Optional[list] = None) -> dict:
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
    if ladder is not None:  # the ladder's radii, then the card's ε of the run's own evaluation
        rec["ladder"] = [*ladder, _ladder_entry({**result["eval"],
                                                 "robust_acc": result["robust_acc"]})]
    if st.kind == "student" and st.method in DEMO_METHODS:
        rec["tas"] = _last_metric(run_dir, "tas")
    return rec


def _last_metric(run_dir: Path, key: str) -> Optional[float]:
    for line in reversed(io.read_jsonl(run_dir / METRICS_FILE)):
        if key in line:
            return float(line[key])
    return None


def _describe(st: Stage) -> str:
    c = st.cfg
    what = f"{c.objective} {model_label(vars(c))}, {c.epochs} epochs"
    if st.selector and st.selector != "full":
        what += f", {st.selector} subset"
    return what


@contextlib.contextmanager
def _quiet(names):
    loggers = [logging.getLogger(n) for n in names]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, old):
            lg.setLevel(level)


def _check_dataset(s: DemoSettings, data_root):
    """The dataset's card (refused with the apt package's name when Fashion-MNIST is missing)."""
    from ..data import load_dataset
    try:
        return load_dataset(s.dataset, root=data_root, train_size=s.train_size, seed=0).card
    except SamplewiseError as exc:
        if s.dataset == "fashion-mnist":
            raise SamplewiseError(
                "the fashion-mnist demo needs Fashion-MNIST, which is not installed: "
                "apt-get install dataset-fashion-mnist (or run the demo on the bundled "
                f"digits: --dataset digits) [{exc}]") from None
        raise


def _check_settings(out: Path, s: DemoSettings, resume: bool) -> None:
    path = out / SETTINGS_FILE
    used = path.is_file() or (out / RESULTS_FILE).is_file() or \
        (out.is_dir() and any(_started(out / n) for n in ("scoring", "coreset-full")))
    if not used:
        return
    if not resume:
        raise SamplewiseError(f"{out} already holds a demo; pass --resume to continue it or "
                              "choose another --out")
    if path.is_file():
        try:
            old = json.loads(path.read_text()).get("settings")
        except (json.JSONDecodeError, AttributeError):
            raise SamplewiseError(f"{path}: not a demo settings file") from None
        if old != s.to_dict():
            diff = sorted(k for k in set(old or {}) | set(s.to_dict())
                          if (old or {}).get(k) != s.to_dict().get(k))
            raise SamplewiseError(f"{out} holds a demo with other settings ({', '.join(diff)}); "
                                  "resume it with the same options or choose another --out")
