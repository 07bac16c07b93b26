"""The coreset study (methods.md §3): does training on an EasyCore subset keep more robustness
than other coresets of the same size?

One scoring run (standard training on the full training set, ``OUT/scoring/``) gives every
score; each selector × fraction becomes a subset file ``OUT/subsets/<selector>-f<F>.npy``
(with the score file's fingerprint next to it); then every selector × fraction × objective ×
seed is a cell trained on its subset, plus the full-data reference (selector ``full``,
fraction 1) per objective × seed. The config::

    study: coreset
    base: {dataset: digits, model: cnn-small, epochs: 10, budget: epochs, ...}  # TrainConfig
    scoring: {model: null, epochs: 10, mode: checkpoint, p: 2}   # model null: base's model
    selection: {class_balanced: false, seed: 0, options: {ccs: {beta: 0.1}}, full_data: true}
    grid: {selectors: [easycore, random], fractions: [0.3], objectives: [pgd-at, trades]}
    seeds: [0, 1, 2]
    eval: {n: 1000, pgd_steps: 20, autoattack: false, autoattack_n: 200}
    # optional: eps_ladder: [0.01, 0.02, 0.05] (PGD at each radius, step eps/4), autoattack_eps,
    # attacks: [fgsm, cw] (registered attacks at the cell's threat model, one column each)

``base.budget`` is ``epochs`` (same epochs, fewer steps; the default) or ``iterations`` (same
number of steps as the full-data run); the results record which was used.

Example:
    >>> summary = run_coreset_study("configs/study-coreset-digits.yaml", "runs/study")
    >>> summary["results"]            # runs/study/results.md, .csv, .json and the plots
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..config import TrainConfig, recipe_of
from ..coreset import SELECTORS, select, summarize_selection
from ..errors import SamplewiseError
from ..formats.subset import read_subset, write_subset
from ..objectives import OBJECTIVES
from . import compare, grid, tables
from .grid import Axis, Cell, StudyConfig, StudySpec
from .ledger import finished_entries, read_ledger
from .ledger import record as record_ledger

log = logging.getLogger(__name__)

FULL = "full"
TITLE = "Coreset study"


@dataclass(frozen=True)
class ScoringSpec:
    """The ``scoring`` section: the one standard training run whose scores every selector uses."""

    model: Optional[str] = None          # None: the base model
    model_args: Optional[dict] = None    # None: the base model_args (when model is None)
    epochs: int = 10
    mode: str = "checkpoint"             # checkpoint | online
    p: Any = 2                           # 2 | 1 | sq
    track_every: int = 1
    seed: int = 0
    lr: Optional[float] = None
    batch_size: Optional[int] = None


@dataclass(frozen=True)
class SelectionSpec:
    """The ``selection`` section: how subsets are drawn from the scores."""

    class_balanced: bool = False
    seed: int = 0
    options: dict = field(default_factory=dict)   # selector -> {option: value}
    full_data: bool = True                        # add the full-data reference cells


SPEC = StudySpec(
    name="coreset",
    axes=(Axis("selectors", "selector", str),
          Axis("fractions", "fraction", float, prefix="f"),
          Axis("objectives", "objective", str, default=("standard",))),
    sections={"scoring": ScoringSpec, "selection": SelectionSpec},
    reserved=("seed", "eval_n", "eval_steps", "objective", "subset"))


def load_coreset_config(source) -> StudyConfig:
    """Parse and check a coreset study config (names, fractions, options)."""
    cfg = grid.load_study(source, SPEC)
    for name in cfg.grid["selector"]:
        if name == FULL:
            raise SamplewiseError("selector 'full' is the full-data reference, added by "
                                  "selection.full_data; remove it from grid.selectors")
        SELECTORS.get(name)
    for name in cfg.grid["objective"]:
        OBJECTIVES.get(name)
    for f in cfg.grid["fraction"]:
        if not 0.0 < f <= 1.0:
            raise SamplewiseError(f"grid.fractions must lie in (0, 1], got {f}")
    sel = cfg.sections["selection"]
    for name, opts in sel.options.items():
        if name not in cfg.grid["selector"] or not isinstance(opts, dict):
            raise SamplewiseError(f"selection.options.{name} must be a mapping of options of a "
                                  "selector listed in grid.selectors")
    sc = cfg.sections["scoring"]
    from ..hardness.scoring import MODES
    from ..hardness.trackers import norm_kind
    norm_kind(sc.p)
    if sc.mode not in MODES:
        raise SamplewiseError(f"scoring.mode must be one of {', '.join(MODES)}, got {sc.mode!r}")
    return cfg


# ----------------------------------------------------------------------------- pieces
def scoring_config(cfg: StudyConfig) -> TrainConfig:
    """The scoring run: the base recipe, standard objective, the scoring section's settings."""
    sc: ScoringSpec = cfg.sections["scoring"]
    base = cfg.base
    model_args = sc.model_args if sc.model_args is not None else \
        (dict(base.model_args) if sc.model is None else {})
    return dataclasses.replace(
        base, model=sc.model or base.model, model_args=model_args, objective="standard",
        objective_args={}, epochs=sc.epochs, seed=sc.seed, budget="epochs",
        lr=base.lr if sc.lr is None else sc.lr,
        batch_size=base.batch_size if sc.batch_size is None else sc.batch_size,
        eval_n=cfg.eval.n, eval_steps=cfg.eval.pgd_steps)


def subset_path(out_dir, selector: str, fraction: float) -> Path:
    return Path(out_dir) / "subsets" / f"{selector}-f{fraction:g}.npy"


def run_scoring(cfg: StudyConfig, out_dir, *, device: Optional[str] = None):
    """The shared scoring run in ``OUT/scoring`` (resumed or loaded when already there)."""
    from ..hardness.scoring import score
    from ..checkpoint import CHECKPOINT

    sc: ScoringSpec = cfg.sections["scoring"]
    path = Path(out_dir) / "scoring"
    resume = any((path / f).exists() for f in (CHECKPOINT, "result.json", "scores.npz"))
    log.info("scoring run in %s (%s)", path, "resuming" if resume else "starting")
    return score(scoring_config(cfg), path, mode=sc.mode, p=sc.p, track_every=sc.track_every,
                 resume=resume, device=device)


def scoring_summary(table, out_dir) -> dict:
    """What the results record of the scoring run behind the subsets."""
    return {"dir": str(Path(out_dir) / "scoring"), "fingerprint": table.meta.get("fingerprint"),
            "model": table.meta.get("model"), "epochs": table.meta.get("epochs"),
            "mode": table.meta.get("mode"), "p": table.meta.get("p")}


def make_subsets(cfg: StudyConfig, table, out_dir) -> dict[tuple, Path]:
    """One subset file per selector × fraction (rewritten only when missing).

    An existing file that differs from a fresh selection means the directory holds another
    scoring run's subsets: refused.
    """
    sel: SelectionSpec = cfg.sections["selection"]
    paths = {}
    for name in cfg.grid["selector"]:
        for f in cfg.grid["fraction"]:
            path = subset_path(out_dir, name, f)
            idx = select(table, name, f, class_balanced=sel.class_balanced, seed=sel.seed,
                         **sel.options.get(name, {}))
            if path.is_file():
                old = read_subset(path)
                if not np.array_equal(old.indices, idx) or (old.summary or {}).get(
                        "fingerprint") != table.meta.get("fingerprint"):
                    raise SamplewiseError(f"{path} differs from a fresh {name} selection of the "
                                          "scores in this study; it belongs to another scoring "
                                          "run (use another --out)")
            else:
                summary = summarize_selection(table, idx)
                summary.update({"selector": name, "class_balanced": sel.class_balanced,
                                "selection_seed": sel.seed, "options": sel.options.get(name, {})})
                write_subset(path, idx, summary)
            paths[(name, f)] = path
    return paths


def subset_names(cfg: StudyConfig) -> dict[tuple, str]:
    """``{(selector, fraction): name}`` of every subset of the grid (the file's stem)."""
    return {(n, f): subset_path("", n, f).stem
            for n in cfg.grid["selector"] for f in cfg.grid["fraction"]}


def subsets_made_by(cfg: StudyConfig) -> dict:
    """What decides the subsets: the scoring run's recipe and the scoring and selection
    sections (a ledger's subsets are taken only when these are the config's)."""
    return json.loads(json.dumps({
        "scoring_run": recipe_of(scoring_config(cfg)),
        "scoring": dataclasses.asdict(cfg.sections["scoring"]),
        "selection": dataclasses.asdict(cfg.sections["selection"])}, default=str))


def restore_subsets(cfg: StudyConfig, led, out_dir) -> Optional[dict]:
    """Write the grid's subset files from the ledger ``led`` (a file already there must hold
    the same samples); returns the ledger's scoring summary, or None (nothing written) when the
    ledger lacks any of the grid's subsets."""
    made_by = subsets_made_by(cfg)
    found = {key: led.subset(name, made_by) for key, name in subset_names(cfg).items()}
    if any(v is None for v in found.values()):
        return None
    for (name, f), (idx, summary) in found.items():
        path = subset_path(out_dir, name, f)
        if path.is_file():
            if not np.array_equal(read_subset(path).indices, idx):
                raise SamplewiseError(f"{path} differs from the {name} subset of ledger "
                                      f"{led.path}; it belongs to another scoring run (use "
                                      "another --out)")
        else:
            write_subset(path, idx, summary)
    log.info("subsets from ledger %s: no scoring run needed", led.path)
    return dict(led.selection.get("scoring") or {})


def ledger_subsets(cfg: StudyConfig, out_dir) -> dict:
    """``{name: (indices, summary)}`` of the grid's subset files, for the ledger."""
    out = {}
    for (name, f), stem in subset_names(cfg).items():
        sub = read_subset(subset_path(out_dir, name, f))
        out[stem] = (sub.indices, sub.summary or {})
    return out


def coreset_cells(cfg: StudyConfig, out_dir) -> list[Cell]:
    """Every cell: selectors × fractions × objectives × seeds, plus the full-data reference
    (``full``, fraction 1) per objective × seed; sorted by id."""
    out = Path(out_dir).resolve()
    common = dict(eval_n=cfg.eval.n, eval_steps=cfg.eval.pgd_steps)
    items = []
    for params in grid.expand(cfg, SPEC):
        path = subset_path(out, params["selector"], params["fraction"])
        items.append((params, dataclasses.replace(
            cfg.base, objective=params["objective"], seed=params["seed"], subset=str(path),
            **common)))
    if cfg.sections["selection"].full_data:
        for objective in cfg.grid["objective"]:
            for seed in cfg.seeds:
                params = {"selector": FULL, "fraction": 1.0, "objective": objective, "seed": seed}
                items.append((params, dataclasses.replace(cfg.base, objective=objective,
                                                          seed=seed, subset=None, **common)))
    return grid.make_cells(items, SPEC.axes)


# ----------------------------------------------------------------------------- the study
def run_coreset_study(config, out_dir, cells=None, *, device: Optional[str] = None,
                      report_only: bool = False, ledger=None) -> dict:
    """Run (or continue) a coreset study and write its results and plots.

    Args:
        config: a YAML path, a mapping or a parsed :class:`StudyConfig`.
        out_dir: the study directory (``scoring/``, ``subsets/``, ``cells/``, results, plots).
        cells: ``"i/n"`` (or ``(i, n)``) to run only the i-th of n shares of the cells (SLURM
            job arrays); every share first makes sure the scoring run and the subsets exist
            (one process at a time, under a lock). Without it, every unfinished cell runs.
        device: overrides the config's device.
        report_only: train and evaluate nothing; write the results and plots of the cells
            finished so far (the progress of a study whose shares are still running).
        ledger: a ledger file (:mod:`samplewise.studies.ledger`): the cells it holds count as
            finished (checked against this study's recipe and subsets), and the cells finished
            here are added to it, with the subsets. A ledger that holds every subset of the
            grid, made with this config's scoring and selection settings, supplies them: no
            scoring run, so another machine whose float rounding differs trains on the same
            samples.

    Returns:
        A dict with ``cells_total``, ``cells_finished``, ``missing``, ``ran`` (id -> status
        of this call), ``failed`` (ids whose run raised a :class:`SamplewiseError`, e.g. a
        diverged loss; the other cells still ran), ``results`` (the results files) and
        ``plots``.

    Example:
        >>> run_coreset_study("configs/study-coreset-digits.yaml", "runs/study", cells="1/4")
    """
    from .plots import coreset_plots

    cfg = load_coreset_config(config)
    share = grid.parse_share(cells)
    out = grid.study_dir(out_dir, existing=report_only and ledger is None)
    led = read_ledger(ledger, cfg.study, cfg.eval) if ledger is not None else None
    scores = out / "scoring" / "scores.npz"
    with grid.file_lock(out / "locks" / "scoring.lock", wait=True):
        scoring = restore_subsets(cfg, led, out) if led is not None else None
        if scoring is None and report_only:
            if not scores.is_file():
                raise SamplewiseError(f"{out} has no finished scoring run yet ({scores} is "
                                      "missing): nothing to report")
            from ..formats.scores import ScoreTable
            scoring = scoring_summary(ScoreTable.load(scores), out)
        elif scoring is None:
            table = run_scoring(cfg, out, device=device)
            make_subsets(cfg, table, out)
            scoring = scoring_summary(table, out)
    all_cells = coreset_cells(cfg, out)
    imported = led.rows_for(all_cells) if led is not None else {}

    def publish(draw: bool) -> tuple:
        """Write the results (and with ``draw`` the plots and the comparison) of every cell
        finished so far and record them, with the subsets, in the ledger; returns ``(record,
        written files, plots)``."""
        with grid.file_lock(out / "locks" / "results.lock", wait=True):  # the last writer sees all
            record = tables.write_results(cfg, all_cells, out, title=TITLE,
                                          extra={"scoring": scoring, "budget": cfg.base.budget},
                                          imported=imported,
                                          ledger_eps=led.eps() if led is not None else None)
            if led is not None:
                record_ledger(ledger, cfg.study, cfg.eval, finished_entries(
                    all_cells, out, cfg.eval, record["rows"], skip=imported),
                    lock=out / "locks" / "ledger.lock", subsets=ledger_subsets(cfg, out),
                    selection={"made_by": subsets_made_by(cfg), "scoring": scoring})
            if not draw:
                return record, [], []
            plots = coreset_plots(record["summary"], out, cfg.eval) if record["rows"] else []
            results = [out / name for name in tables.RESULTS]
            label = f"PGD-{cfg.eval.pgd_steps} at the cell's ε"
            written = compare.write_comparison(record["summary"], out, cfg.eval, compare.CORESET,
                                               pgd_label=label)
        return record, results + ([written] if written is not None else []), plots

    ran = {} if report_only else grid.run_cells(all_cells, out, cfg.eval, share=share,
                                                device=device, done=imported,
                                                after_cell=lambda cell: publish(draw=False))
    record, results, plots = publish(draw=True)
    return {"cells_total": record["cells_total"], "cells_finished": record["cells_finished"],
            "missing": record["missing"], "ran": ran,
            "failed": sorted(k for k, v in ran.items() if v.startswith("failed")),
            "results": [str(p) for p in results],
            "plots": [str(p) for p in plots]}
