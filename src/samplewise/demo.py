"""``samplewise demo``: EasyCore and SAAD end to end in a few minutes on two CPU cores (issue #7).

One call runs, each stage in its own run directory ``OUT/<stage>/``:

1. ``scoring``: a standard training that records every sample's AIGN (and EL2N, ...);
2. ``coreset-full``, ``coreset-easycore``, ``coreset-random``, ``coreset-el2n``: PGD-AT on the
   full training set and on three coresets of one fraction (``OUT/subsets/<selector>.npy``);
3. ``teacher`` (a wider model, adversarially trained), ``student-alone`` (the student trained
   with PGD-AT, no teacher) and ``distill-ard``, ``distill-rslad``, ``distill-saad``;

then evaluates clean and PGD-20 accuracy at the dataset card's ε on the fixed test slice (every
run's ``result.json``), reads each student's TAS from the last line of its ``metrics.jsonl``,
and writes ``OUT/report.md`` (two Markdown tables, the settings, a reading generated from the
numbers), ``OUT/results.json`` and three PNG plots, all atomically. ``resume=True`` skips the
finished stages (and continues an interrupted one from its checkpoint); a rerun of a finished
demo rewrites nothing whose content did not change.

Example:
    >>> results = run_demo("runs/demo")                        # digits, about five minutes
    >>> results["coreset"]["methods"]["easycore"]["robust_acc"]
    >>> run_demo("/tmp/demo-quick", quick=True)                # seconds: checks the machinery
"""

from __future__ import annotations

import contextlib
import dataclasses
import io as _io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from . import io
from .config import TrainConfig, validate_train
from .errors import SamplewiseError
from .train import CHECKPOINT, METRICS, Hook

log = logging.getLogger(__name__)

FORMAT = "samplewise.demo/1"
DATASETS = ("digits", "fashion-mnist")
SETTINGS_FILE = "demo.json"
STAGE_FILE = "demo_stage.json"
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
PLOTS = {"aign": "aign_hist.png", "coreset": "coreset_acc.png", "distill": "distill_acc_tas.png"}
#: the coreset selectors the demo compares (EasyCore keeps the easiest, EL2N the hardest)
SELECTORS = ("easycore", "random", "el2n")
#: the distillation methods the demo compares
METHODS = ("ard", "rslad", "saad")
#: loggers whose per-epoch lines the progress bar replaces (unless ``verbose``)
_CHATTY = ("samplewise.train", "samplewise.runs", "samplewise.hardness", "samplewise.coreset")


@dataclass(frozen=True)
class DemoSettings:
    """Everything a demo run depends on; stored in ``OUT/demo.json`` and checked on resume."""

    dataset: str = "digits"
    train_size: Optional[int] = None      # stratified sample of the training set (None: all)
    # the scoring run (standard training)
    scoring_model: str = "mlp"
    scoring_model_args: dict = field(default_factory=dict)
    scoring_epochs: int = 15
    # the coreset comparison
    fraction: float = 0.5
    coreset_model: str = "mlp"
    coreset_model_args: dict = field(default_factory=dict)
    coreset_objective: str = "pgd-at"
    coreset_epochs: int = 40
    # the distillation comparison
    teacher_model: str = "mlp"
    teacher_model_args: dict = field(default_factory=lambda: {"hidden": 512})
    teacher_objective: str = "trades"
    teacher_epochs: int = 40
    student_model: str = "mlp"
    student_model_args: dict = field(default_factory=lambda: {"hidden": 64})
    student_epochs: int = 60
    student_weight_decay: float = 2e-4    # the distillation recipe's (methods.md §4)
    student_lr: float = 0.05              # SAAD's up-to-5x sample weights diverge at 0.1 on MLPs
    # shared training and evaluation settings
    lr: float = 0.1
    batch_size: int = 128
    attack_steps: int = 10                # PGD steps of the inner maximisation
    eval_n: int = 450                     # fixed test slice of the final evaluation
    eval_steps: int = 20                  # PGD-20 for the final robust accuracy
    monitor_steps: int = 5                # per-epoch monitor (metrics.jsonl)
    seed: int = 0
    threads: Optional[int] = 1            # tiny models run fastest single-threaded
    quick: bool = False

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


#: the default demo of each dataset (tuned to about five minutes on two CPU cores)
PRESETS: dict[str, DemoSettings] = {
    "digits": DemoSettings(),
    "fashion-mnist": DemoSettings(
        dataset="fashion-mnist", train_size=5000, scoring_epochs=10, coreset_epochs=20,
        teacher_epochs=20, student_epochs=20,
        attack_steps=5, eval_n=500),
}

#: what ``quick`` changes: seconds instead of minutes (checks the machinery, not the science)
QUICK = dict(scoring_epochs=2, coreset_epochs=2, teacher_epochs=2, student_epochs=2,
             attack_steps=2, eval_n=50, eval_steps=2, monitor_steps=0,
             teacher_model_args={"hidden": 128}, student_model_args={"hidden": 32}, quick=True)


def demo_settings(dataset: str = "digits", quick: bool = False, **overrides) -> DemoSettings:
    """The preset of ``dataset`` (made tiny by ``quick``), with ``overrides`` applied."""
    if dataset not in PRESETS:
        raise SamplewiseError(f"the demo runs on {' or '.join(DATASETS)}, not '{dataset}'")
    s = PRESETS[dataset]
    if quick:
        s = dataclasses.replace(s, **QUICK, **({"train_size": 600} if s.train_size else {}))
    try:
        s = dataclasses.replace(s, **overrides)
    except TypeError as exc:
        raise SamplewiseError(f"unknown demo setting: {exc}") from None
    if not 0 < s.fraction < 1:
        raise SamplewiseError(f"the demo's coreset fraction must be in (0, 1), got {s.fraction}")
    return s


# ----------------------------------------------------------------------------- stages
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


# ----------------------------------------------------------------------------- the demo
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
    _check_dataset(s, data_root)
    _check_settings(out, s, resume)
    stages = plan(s, out.resolve(), data_root=data_root, device=device)
    out.mkdir(parents=True, exist_ok=True)
    _write_if_changed(out / SETTINGS_FILE, _json_text({"format": FORMAT, "settings": s.to_dict()}))

    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    import torch

    total = sum(st.cfg.epochs for st in stages)
    records: dict[str, dict] = {}
    table = None
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
            else:
                from .runs import run_training
                run_training(st.cfg, run_dir, resume=_started(run_dir), hooks=[ticks])
            bar.update(max(0, st.cfg.epochs - ticks.count))
            seconds = time.perf_counter() - t0
            records[st.name] = _stage_record(st, run_dir, seconds)
            r = records[st.name]
            log.info("stage %d/%d %s: clean %.1f%%, PGD-%d %.1f%%%s (%.0f s)", i, len(stages),
                     st.name, 100 * r["clean_acc"], s.eval_steps, 100 * r["robust_acc"],
                     f", TAS {r['tas']:.3f}" if r.get("tas") is not None else "", r["seconds"])
    results = assemble(s, stages, records, table, out)
    return write_outputs(results, table, out)


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


def _describe(st: Stage) -> str:
    c = st.cfg
    args = ",".join(f"{k}={v}" for k, v in c.model_args.items())
    what = f"{c.objective} {c.model}{f'({args})' if args else ''}, {c.epochs} epochs"
    if st.selector and st.selector != "full":
        what += f", {st.selector} subset"
    return what


def _check_dataset(s: DemoSettings, data_root) -> None:
    from .data import load_dataset
    try:
        load_dataset(s.dataset, root=data_root, train_size=s.train_size, seed=0)
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


def _run_scoring(st: Stage, run_dir: Path, ticks: Hook):
    from .hardness.scoring import SCORES_FILE, score
    resume = any((run_dir / f).exists() for f in (CHECKPOINT, "result.json", SCORES_FILE))
    return score(st.cfg, run_dir, resume=resume, hooks=[ticks])


def _make_subsets(table, s: DemoSettings, out: Path) -> None:
    """One subset per selector at ``s.fraction`` (a fresh selection must equal a saved one)."""
    from .coreset import save_selection, select, summarize_selection
    for name in SELECTORS:
        path = out / "subsets" / f"{name}.npy"
        idx = select(table, name, s.fraction, seed=s.seed)
        if path.is_file():
            if not np.array_equal(np.load(path, allow_pickle=False), idx):
                raise SamplewiseError(f"{path} differs from a fresh {name} selection of this "
                                      "demo's scores; choose another --out")
            continue
        summary = summarize_selection(table, idx)
        summary.update({"selector": name, "selection_seed": s.seed})
        save_selection(path, idx, summary)


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


# ----------------------------------------------------------------------------- results
def assemble(s: DemoSettings, stages: list[Stage], records: dict, table, out: Path) -> dict:
    """``results.json``: settings, every stage's numbers, the reading and the tables."""
    by_kind = {st.name: st for st in stages}
    ev = records["coreset-full"]["eval"] or {}
    aign = table.get("aign").astype(np.float64)
    cut = _easycore_cut(table, s.fraction)
    coreset = {"fraction": s.fraction, "objective": s.coreset_objective,
               "model": s.coreset_model, "model_args": dict(s.coreset_model_args),
               "epochs": s.coreset_epochs, "budget": "epochs",
               "reference_standard": records["scoring"],
               "methods": {by_kind[n].selector: records[n] for n in records
                           if by_kind[n].kind == "coreset"}}
    classes, totals = np.unique(table.labels, return_counts=True)
    for name in SELECTORS:
        meta = json.loads((out / "subsets" / f"{name}.json").read_text())
        hist = meta.get("class_histogram") or {}
        coreset["methods"][name]["class_histogram"] = hist
        coreset["methods"][name]["class_share_kept"] = {
            str(int(c)): round(hist.get(str(int(c)), 0) / int(t), 4)
            for c, t in zip(classes, totals)}
        aign_in = (meta.get("scores", {}).get("aign") or {}).get("inside")
        coreset["methods"][name]["mean_aign"] = aign_in
    distill = {"teacher": records["teacher"], "student_alone": records["student-alone"],
               "student_model": s.student_model, "student_model_args": dict(s.student_model_args),
               "epochs": s.student_epochs,
               "methods": {by_kind[n].method: records[n] for n in records
                           if by_kind[n].kind == "student" and by_kind[n].method in METHODS}}
    results = {
        "format": FORMAT, "dataset": s.dataset, "quick": s.quick, "settings": s.to_dict(),
        "eval": {"attack": "pgd", "eps": ev.get("eps"), "alpha": ev.get("alpha"),
                 "steps": ev.get("steps"), "n": ev.get("n"), "seed": ev.get("seed")},
        "scoring": {"run": "scoring", "model": s.scoring_model, "epochs": s.scoring_epochs,
                    "n_scored": int(len(aign)), "easycore_cut": cut,
                    "aign": {"mean": float(aign.mean()), "median": float(np.median(aign)),
                             "min": float(aign.min()), "max": float(aign.max())}},
        "coreset": coreset, "distillation": distill,
        "stages": [{"name": n, "seconds": records[n]["seconds"]} for n in records],
        "seconds": round(sum(r["seconds"] for r in records.values()), 1),
    }
    results["reading"] = reading(results)
    return results


def _easycore_cut(table, fraction: float) -> float:
    from .coreset import subset_size
    v = np.sort(table.get("aign").astype(np.float64))
    return float(v[subset_size(fraction, len(v)) - 1])


def _pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def coreset_table(results: dict) -> str:
    c, ev = results["coreset"], results["eval"]
    head = (f"| training data ({c['objective']}, {c['model']}) | samples | clean acc | "
            f"PGD-{ev['steps']} acc |\n| --- | ---: | ---: | ---: |\n")
    rows = []
    for name, r in c["methods"].items():
        label = "full training set" if name == "full" else \
            f"{name} {c['fraction']:.0%} ({_KEEPS.get(name, '')})"
        rows.append(f"| {label} | {r['n_train']} | {_pct(r['clean_acc'])} | "
                    f"{_pct(r['robust_acc'])} |")
    std = c["reference_standard"]
    rows.append(f"| reference: standard training, full set (the scoring run) | {std['n_train']} | "
                f"{_pct(std['clean_acc'])} | {_pct(std['robust_acc'])} |")
    return head + "\n".join(rows) + "\n"


_KEEPS = {"easycore": "lowest AIGN", "random": "uniform", "el2n": "highest EL2N"}


def _arch(r: dict) -> str:
    args = ",".join(f"{k}={v}" for k, v in (r.get("model_args") or {}).items())
    return f"{r['model']}({args})" if args else r["model"]


def distill_table(results: dict) -> str:
    d, ev = results["distillation"], results["eval"]
    head = (f"| model | training | clean acc | PGD-{ev['steps']} acc | TAS (last epoch) |\n"
            "| --- | --- | ---: | ---: | ---: |\n")
    t, a = d["teacher"], d["student_alone"]
    rows = [f"| teacher {_arch(t)} | {t['objective']} | {_pct(t['clean_acc'])} | "
            f"{_pct(t['robust_acc'])} | – |",
            f"| student {_arch(a)} | pgd-at, no teacher | {_pct(a['clean_acc'])} | "
            f"{_pct(a['robust_acc'])} | – |"]
    for m, r in d["methods"].items():
        tas = "–" if r.get("tas") is None else f"{r['tas']:.3f}"
        rows.append(f"| student {_arch(r)} | {m} | {_pct(r['clean_acc'])} | "
                    f"{_pct(r['robust_acc'])} | {tas} |")
    return head + "\n".join(rows) + "\n"


def _noise(p1: float, p2: float, n: int) -> float:
    """Two binomial standard errors of a difference of two accuracies on ``n`` test images."""
    p = min(max((p1 + p2) / 2, 1.0 / n), 1 - 1.0 / n)
    return 2 * math.sqrt(2 * p * (1 - p) / n)


def _compare(a_name: str, a: float, b_name: str, b: float, n: int) -> str:
    d = 100 * (a - b)
    noise = 100 * _noise(a, b, n)
    if abs(d) < noise:
        return (f"{a_name} and {b_name} were within {abs(d):.1f} points of each other, less than "
                f"the ≈{noise:.1f}-point noise of a {n}-image test slice: no difference in this "
                "run")
    word = "above" if d > 0 else "below"
    return (f"{a_name} was {abs(d):.1f} points {word} {b_name}, more than the ≈{noise:.1f}-point "
            f"noise of the {n}-image test slice, but this is one seed")


def reading(results: dict) -> dict:
    """The report's interpretation, generated from the numbers.

    Returns ``{"coreset": str, "distillation": str, "does_not": str}``: what this run's numbers
    say about the coresets and the distillation methods, and what they cannot say.
    """
    c, d, ev, s = results["coreset"], results["distillation"], results["eval"], results["settings"]
    n = int(ev.get("n") or s["eval_n"])
    steps = ev["steps"]
    m = c["methods"]
    full, std = m["full"], c["reference_standard"]
    at_gain = full["robust_acc"] - std["robust_acc"]
    at_clear = at_gain > _noise(full["robust_acc"], std["robust_acc"], n)
    cs = [f"On the full training set {c['objective']} reached {_pct(full['robust_acc'])} "
          f"PGD-{steps} accuracy at ε = {ev['eps']:g}, against {_pct(std['robust_acc'])} for "
          f"standard training (clean {_pct(full['clean_acc'])} vs {_pct(std['clean_acc'])}): "
          + ("adversarial training clearly raised robustness, so the comparison below is between "
             "models that learned something robust." if at_clear else
             "adversarial training did not clearly raise robustness in this run, so the coreset "
             "comparison below says little.")]
    order = sorted(SELECTORS, key=lambda k: -m[k]["robust_acc"])
    best = order[0]
    ratio = m[best]["robust_acc"] / full["robust_acc"] if full["robust_acc"] > 0 else float("nan")
    cs.append(
        f"Among the {c['fraction']:.0%} coresets, trained for the same number of epochs (so half "
        f"the steps), the PGD-accuracy order was {' > '.join(order)}; the best ({best}) kept "
        + (f"{ratio:.0%} of the full-data robust accuracy." if math.isfinite(ratio) else
           "some robust accuracy where the full-data run kept none."))
    cs.append(_compare("EasyCore", m["easycore"]["robust_acc"], "random",
                       m["random"]["robust_acc"], n) + "; " +
              _compare("EasyCore", m["easycore"]["robust_acc"], "EL2N (hardest half)",
                       m["el2n"]["robust_acc"], n) + ".")
    dc = 100 * (m["easycore"]["clean_acc"] - m["random"]["clean_acc"])
    cs.append(f"On clean accuracy EasyCore was {abs(dc):.1f} points "
              f"{'above' if dc >= 0 else 'below'} random ({_pct(m['easycore']['clean_acc'])} vs "
              f"{_pct(m['random']['clean_acc'])}).")
    spans = {k: m[k].get("class_share_kept") for k in ("easycore", "random")}
    if all(spans.values()):
        def span(k):
            v = spans[k]
            lo, hi = min(v, key=v.get), max(v, key=v.get)
            return f"{v[lo]:.0%} (class {lo}) to {v[hi]:.0%} (class {hi})"
        cs.append(f"EasyCore's global AIGN ranking kept {span('easycore')} of each class, "
                  f"random {span('random')}; such a skew alone can cost accuracy on the "
                  "under-kept classes, and this run does not separate it from the effect of "
                  "hardness itself (a class-balanced EasyCore would).")

    meths = d["methods"]
    t, alone = d["teacher"], d["student_alone"]
    top = max(meths, key=lambda k: meths[k]["robust_acc"])
    base_best = max((k for k in meths if k != "saad"), key=lambda k: meths[k]["robust_acc"])
    ds = [f"The teacher ({_arch(t)}, {t['objective']}) reached {_pct(t['robust_acc'])} PGD-{steps} "
          f"accuracy and the student trained alone with pgd-at {_pct(alone['robust_acc'])}. "
          f"The most robust distilled student was {top} ({_pct(meths[top]['robust_acc'])}): "
          + _compare(f"the {top} student", meths[top]["robust_acc"], "the student trained alone",
                     alone["robust_acc"], n) + "."]
    ds.append(_compare("SAAD", meths["saad"]["robust_acc"], f"the best baseline ({base_best})",
                       meths[base_best]["robust_acc"], n) + ".")
    with_tas = [k for k in meths if meths[k].get("tas") is not None]
    if len(with_tas) >= 2:
        by_tas = sorted(with_tas, key=lambda k: -meths[k]["tas"])
        rob = [meths[k]["robust_acc"] for k in with_tas]
        spread, noise = max(rob) - min(rob), _noise(max(rob), min(rob), n)
        agree = by_tas[0] == max(with_tas, key=lambda k: meths[k]["robust_acc"])
        if spread < noise:
            link = (f"the students' PGD accuracies all lay within {100 * spread:.1f} points, "
                    f"inside the ≈{100 * noise:.1f}-point noise, so TAS differences went with no "
                    "measurable robustness difference here")
        else:
            link = f"the highest-TAS method {'was' if agree else 'was not'} the most robust student"
        ds.append(
            f"TAS (the share of the student's own adversarial examples that also fool the "
            f"teacher, last training epoch) ordered the methods {' > '.join(by_tas)} "
            f"({', '.join(format(meths[k]['tas'], '.2f') for k in by_tas)}); {link}. With "
            f"{len(with_tas)} methods and one seed this is an anecdote, not a test of the SAAD "
            "paper's finding that student robustness follows TAS (the methods also craft x' "
            "differently, which changes TAS by itself).")

    size = full["n_train"]
    does_not = (
        f"What this does not show: anything general. The data are {size} training images of "
        f"{results['dataset']}, the models are small ({_arch(full)} for the coresets, "
        f"{_arch(t)} → {_arch(alone)} for distillation), training is {s['coreset_epochs']} "
        f"(coresets) and {s['student_epochs']} (students) epochs with {s['attack_steps']}-step "
        f"PGD, there is one seed ({s['seed']}) and one fraction ({c['fraction']:.0%}), and "
        f"robustness is PGD-{steps} on {n} test images, not AutoAttack. Differences of a few "
        "points are within what another seed could change, which this run does not measure. "
        "The papers' claims (EasyCore: up to +7 points adversarial accuracy over other coresets; "
        "SAAD: transfer-aware sample weights give more robust students than ARD, RSLAD, AdaAD "
        "or IGDM) concern CIFAR-scale ResNets and long "
        "schedules and are neither confirmed nor refuted here. Every number above is real, read "
        "from this run's result.json and metrics.jsonl files.")
    if results.get("quick"):
        does_not = (f"This was a --quick run ({s['coreset_epochs']} epochs, {s['attack_steps']} "
                    f"attack steps, {n} test images): it checks that every stage runs, and its "
                    "numbers mean nothing. " + does_not)
    return {"coreset": " ".join(cs), "distillation": " ".join(ds), "does_not": does_not}


# ----------------------------------------------------------------------------- outputs
def _json_text(obj) -> str:
    return json.dumps(obj, indent=2, default=io._json_default) + "\n"


def _write_if_changed(path: Path, data: str | bytes) -> bool:
    """Atomic write unless the file already holds exactly ``data`` (so a rerun keeps mtimes)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if path.is_file() and path.read_bytes() == raw:
        return False
    io.write_bytes(path, raw)
    return True


def write_outputs(results: dict, table, out: Path) -> dict:
    """Write ``results.json``, the plots and ``report.md`` (each only if its content changed)."""
    tables = {"coreset": coreset_table(results), "distillation": distill_table(results)}
    results = {**results, "plots": dict(PLOTS)}
    _write_if_changed(out / RESULTS_FILE, _json_text(results))
    plots = {"aign": plot_aign(table, results), "coreset": plot_coreset(results),
             "distill": plot_distill(results)}
    for key, png in plots.items():
        _write_if_changed(out / PLOTS[key], png)
    _write_if_changed(out / REPORT_FILE, report_markdown(results, tables))
    paths = {"report": str(out / REPORT_FILE), "results": str(out / RESULTS_FILE),
             **{k: str(out / v) for k, v in PLOTS.items()}}
    return {**results, "tables": tables, "paths": paths}


def report_markdown(results: dict, tables: dict) -> str:
    s, ev, sc = results["settings"], results["eval"], results["scoring"]
    d = results["distillation"]
    quick = " (--quick)" if results["quick"] else ""
    lines = [f"# samplewise demo: {results['dataset']}{quick}",
             "",
             f"Command: `samplewise demo --dataset {results['dataset']}"
             f"{' --quick' if results['quick'] else ''} --out DIR`. "
             f"Stages took {results['seconds']:.0f} s in all (wall time of the calls that ran "
             "them). Robust accuracy is PGD-"
             f"{ev['steps']} (step {ev['alpha']:g}, random start) at the dataset card's ε = "
             f"{ev['eps']:g}, on a fixed slice of {ev['n']} test images; clean accuracy on the "
             "same slice.", "",
             "## Hardness (AIGN) of the training samples", "",
             f"A standard training of {sc['model']} for {sc['epochs']} epochs scored "
             f"{sc['n_scored']} samples; AIGN (mean input-gradient L2 norm over the epochs) has "
             f"median {sc['aign']['median']:.3g} (range {sc['aign']['min']:.3g} to "
             f"{sc['aign']['max']:.3g}). EasyCore keeps the {s['fraction']:.0%} with AIGN ≤ "
             f"{sc['easycore_cut']:.3g}.", "",
             f"![AIGN distribution]({PLOTS['aign']})", "",
             f"## Coresets: {results['coreset']['objective']} on {s['fraction']:.0%} of the data",
             "", tables["coreset"],
             f"![clean and PGD accuracy per coreset]({PLOTS['coreset']})", "",
             "## Distillation: teacher → smaller student", "",
             f"Students trained {d['epochs']} epochs from the teacher in `teacher/`; TAS is the "
             "share of the student's own adversarial examples (training batches, last epoch) "
             "that also fool the teacher.", "", tables["distillation"],
             f"![student PGD accuracy and TAS]({PLOTS['distill']})", "",
             "## What this shows and what it does not", ""]
    rd = results["reading"]
    lines += [f"**Coresets.** {rd['coreset']}", "", f"**Distillation.** {rd['distillation']}", "",
              rd["does_not"], "",
              "## Settings", "", "| setting | value |", "| --- | --- |"]
    for k, v in s.items():
        lines.append(f"| {k} | `{json.dumps(v)}` |")
    lines += ["", "| stage | seconds |", "| --- | ---: |"]
    lines += [f"| {st['name']} | {st['seconds']:.1f} |" for st in results["stages"]]
    lines += ["", "Each stage's run directory (`config.yaml`, `metrics.jsonl`, `result.json`, "
              "`model.pt`) is under this folder; `results.json` holds every number above.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots
def _figure(ncols: int, width: float = 5.0, height: float = 3.8):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def _png(fig) -> bytes:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def plot_aign(table, results: dict) -> bytes:
    """AIGN histogram (log scale, EasyCore's kept part shaded) and AIGN per class."""
    aign = np.maximum(table.get("aign").astype(np.float64), 1e-12)
    labels = table.labels
    cut = results["scoring"]["easycore_cut"]
    frac = results["settings"]["fraction"]
    fig, (ax, bx) = _figure(2)
    bins = np.logspace(np.log10(aign.min()), np.log10(aign.max()), 40)
    kept = aign <= cut
    ax.hist([aign[kept], aign[~kept]], bins=bins, stacked=True, color=["C2", "C7"],
            label=[f"kept by EasyCore ({kept.sum()})", f"dropped ({(~kept).sum()})"])
    ax.axvline(cut, color="black", linestyle="--", linewidth=1.2,
               label=f"EasyCore {frac:.0%} cut ({cut:.3g})")
    ax.set_xscale("log")
    ax.set_xlabel("AIGN (mean ‖∇ₓ CE‖₂ over epochs, log scale)")
    ax.set_ylabel("training samples")
    ax.set_title("AIGN of every training sample")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    classes = sorted(set(int(c) for c in labels))
    data = [aign[labels == c] for c in classes]
    share = [float((aign[labels == c] <= cut).mean()) for c in classes]
    bx.boxplot(data, showfliers=False)
    bx.set_xticks(range(1, len(classes) + 1),
                  [f"{c}\n{p:.0%}" for c, p in zip(classes, share)], fontsize="small")
    bx.axhline(cut, color="black", linestyle="--", linewidth=1.2, label="EasyCore cut")
    bx.plot([], [], color="C1", label="median (box: quartiles)")
    bx.set_yscale("log")
    bx.set_xlabel("class (below: share kept by EasyCore)")
    bx.set_ylabel("AIGN (log scale)")
    bx.set_title("AIGN per class")
    bx.legend(fontsize="small")
    bx.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{results['dataset']}: sample hardness from the scoring run "
                 f"({results['scoring']['model']}, {results['scoring']['epochs']} epochs)")
    return _png(fig)


def _bars(ax, names, series: dict, ylabel: str, title: str, fmt="{:.0f}", scale=100.0):
    width = 0.8 / len(series)
    x = np.arange(len(names))
    for j, (label, values) in enumerate(series.items()):
        pos = x + (j - (len(series) - 1) / 2) * width
        vals = [scale * v if v is not None else 0.0 for v in values]
        bars = ax.bar(pos, vals, width, label=label, color=f"C{j}")
        for b, v in zip(bars, values):
            if v is not None:
                ax.annotate(fmt.format(scale * v), (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize="x-small")
    ax.set_xticks(x, names, fontsize="small")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")


def plot_coreset(results: dict) -> bytes:
    c, ev = results["coreset"], results["eval"]
    names = list(c["methods"])
    fig, (ax,) = _figure(1, width=6.4, height=4.2)
    _bars(ax, [n if n == "full" else f"{n}\n{c['fraction']:.0%}" for n in names],
          {"clean": [c["methods"][n]["clean_acc"] for n in names],
           f"PGD-{ev['steps']} (ε={ev['eps']:g})": [c["methods"][n]["robust_acc"] for n in names]},
          "accuracy on the test slice (%)",
          f"{c['objective']} on coresets ({results['dataset']}, {c['model']}, "
          f"{c['epochs']} epochs)")
    std = c["reference_standard"]["robust_acc"]
    ax.axhline(100 * std, color="black", linestyle=":", linewidth=1.2,
               label=f"PGD acc. of standard training ({100 * std:.0f})")
    ax.set_ylim(0, 128)
    ax.set_yticks(range(0, 101, 20))
    ax.legend(fontsize="small", loc="upper center", ncol=2)
    ax.set_xlabel("training data (coreset method, fraction kept)")
    return _png(fig)


def plot_distill(results: dict) -> bytes:
    d, ev = results["distillation"], results["eval"]
    names = list(d["methods"])
    fig, (ax, bx) = _figure(2, width=4.8, height=4.0)
    _bars(ax, names, {"clean": [d["methods"][n]["clean_acc"] for n in names],
                      f"PGD-{ev['steps']}": [d["methods"][n]["robust_acc"] for n in names]},
          "student accuracy on the test slice (%)", f"students {_arch(d['student_alone'])}")
    t, a = d["teacher"]["robust_acc"], d["student_alone"]["robust_acc"]
    ax.axhline(100 * t, color="black", linestyle="--", linewidth=1.2,
               label=f"teacher PGD ({100 * t:.0f})")
    ax.axhline(100 * a, color="C3", linestyle=":", linewidth=1.4,
               label=f"student alone, PGD ({100 * a:.0f})")
    ax.set_ylim(0, 128)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("distillation method")
    ax.legend(fontsize="x-small", loc="upper center", ncol=2)
    tas = [d["methods"][n].get("tas") for n in names]
    _bars(bx, names, {"TAS": tas}, "TAS (share of student x' fooling the teacher)",
          "adversarial transferability (last epoch)", fmt="{:.2f}", scale=1.0)
    bx.set_ylim(0, 1.05)
    bx.set_xlabel("distillation method")
    bx.legend(fontsize="small", loc="upper right", title="higher: more x' transfer",
              title_fontsize="x-small")
    fig.suptitle(f"{results['dataset']}: distilling {_arch(d['teacher'])} "
                 f"({d['teacher']['objective']}) into {_arch(d['student_alone'])}, "
                 f"ε = {ev['eps']:g}")
    return _png(fig)
