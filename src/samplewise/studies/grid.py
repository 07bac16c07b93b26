"""Generic study machinery: a YAML grid of training runs -> cells -> run dirs -> tables.

A study config is YAML::

    study: coreset                 # which study (checked against the study that reads it)
    base: {TrainConfig keys ...}   # the recipe shared by every cell
    grid: {axis: [values], ...}    # the study's axes (e.g. selectors, fractions, objectives)
    seeds: [0, 1, 2]
    eval: {n: 1000, pgd_steps: 20, autoattack: false, autoattack_n: 200, ...}  # EvalSpec
    <section>: {...}               # study-specific sections (e.g. coreset's scoring, selection)

Unknown keys anywhere are a :class:`SamplewiseError`. The grid expands to cells (the product of
the axes, times the seeds) with stable string ids such as ``easycore-f0.3-trades-s1``. Each cell
is one run directory ``OUT/cells/<id>/`` written by :func:`samplewise.runs.run_training`; a
finished cell is skipped and a killed cell resumes from its checkpoint, so a study can be rerun
(or split over a SLURM job array with ``share=(i, n)``) at no cost, and any number of workers
running the same command share the cells (:func:`run_cells` claims each cell by its lock). After training, a cell's
PGD accuracy is read from its ``result.json`` (the cell's ``eval_n``/``eval_steps`` are set from
the ``eval`` section), AutoAttack, when asked for, is cached in ``autoattack.json``, and the PGD
accuracy at every radius of ``eval.eps_ladder`` in ``ladder.json`` (one entry per radius, so a
longer ladder only adds the new radii), and every registered attack of ``eval.attacks`` at the
cell's threat model in ``attacks.json`` (one entry per attack, likewise).

:func:`samplewise.studies.tables.write_results` then writes ``results.csv`` (one row per
finished cell), ``results.md`` (mean ± std over seeds) and ``results.json``, all atomically.

A new study (e.g. distillation) declares a :class:`StudySpec` (its axes and sections), reads
its config with :func:`load_study`, turns each :func:`expand` entry into ``(params,
TrainConfig)`` pairs, and calls :func:`make_cells`, :func:`run_cells` and
:func:`~samplewise.studies.tables.write_results`; see :mod:`samplewise.studies.coreset_study`.

Example:
    >>> spec = StudySpec("toy", axes=(Axis("objectives", "objective", str),))
    >>> cfg = load_study({"study": "toy", "grid": {"objectives": ["standard"]}, "seeds": [0, 1]},
    ...                  spec)
    >>> [params["objective"] for params in expand(cfg, spec)]
    ['standard', 'standard']
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from .. import io, preemption, runlock
from ..config import TrainConfig, build, check_same_run, read_yaml, validate_train, with_recipe
from ..errors import SamplewiseError

log = logging.getLogger(__name__)

CELLS_DIR = "cells"
AUTOATTACK_FILE = "autoattack.json"
LADDER_FILE = "ladder.json"
ATTACKS_FILE = "attacks.json"
TOP_KEYS = ("study", "base", "grid", "seeds", "eval")
#: a cell's status in :func:`run_cells` when a ledger holds its results
LEDGER_STATUS = "from the ledger"

# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class EvalSpec:
    """The ``eval`` section: how every cell is evaluated after training.

    Attributes:
        n: test samples (a fixed slice, the same for every cell) for clean and PGD accuracy.
        pgd_steps: PGD steps of the robust accuracy (at the cell's ε, step = the card's).
        autoattack: also run AutoAttack on a smaller fixed slice (cached as autoattack.json).
        autoattack_n: its number of test samples.
        autoattack_version: ``standard`` (APGD-CE, APGD-T, FAB-T, Square) or ``custom``.
        autoattack_attacks: the attacks of ``custom``, e.g. ``[apgd-ce, apgd-t]``.
        autoattack_seeds: run AutoAttack only on the cells of these seeds (default: all);
            AutoAttack costs far more than PGD, so one seed per setting is a common compromise.
        batch_size: attack batch size.
        eps_ladder: increasing L∞ radii (numbers or ``"k/255"`` strings): PGD-``pgd_steps``
            accuracy at each, step = radius/4, on the same ``n`` samples (cached per radius in
            ``ladder.json``), besides the PGD accuracy at the cell's ε.
        autoattack_eps: AutoAttack's radius (a number or ``"k/255"``); default: the middle
            radius of the ladder (``eps_ladder[len // 2]``), or the cell's ε without a ladder.
        attacks: names of registered attacks (``samplewise.attacks.ATTACKS``), each evaluated on
            the same ``n`` samples at the cell's threat model (its ε and step, ``pgd_steps``
            steps, seed 0), cached per attack in ``attacks.json``.
    """

    n: int = 1000
    pgd_steps: int = 20
    autoattack: bool = False
    autoattack_n: int = 200
    autoattack_version: str = "standard"
    autoattack_attacks: Optional[list] = None
    autoattack_seeds: Optional[list] = None
    batch_size: int = 256
    eps_ladder: Optional[list] = None
    autoattack_eps: Any = None
    attacks: Optional[list] = None

    def __post_init__(self) -> None:
        for name in ("n", "autoattack_n", "batch_size"):
            if getattr(self, name) < 1:
                raise SamplewiseError(f"eval.{name} must be >= 1, got {getattr(self, name)}")
        if self.pgd_steps < 0:
            raise SamplewiseError(f"eval.pgd_steps must be >= 0, got {self.pgd_steps}")
        if self.autoattack_version not in ("standard", "custom", "plus", "rand"):
            raise SamplewiseError("eval.autoattack_version must be standard, custom, plus or rand, "
                                  f"got {self.autoattack_version!r}")
        if (self.autoattack_version == "custom") != (self.autoattack_attacks is not None):
            raise SamplewiseError("eval.autoattack_attacks is given exactly when "
                                  "eval.autoattack_version is 'custom'")
        if self.autoattack_seeds is not None and not all(
                isinstance(s, int) and not isinstance(s, bool) for s in self.autoattack_seeds):
            raise SamplewiseError(f"eval.autoattack_seeds must list seeds, got "
                                  f"{self.autoattack_seeds!r}")
        if self.eps_ladder is not None:
            radii = [r for _, r in self.ladder()]
            if not radii or any(b <= a for a, b in zip(radii, radii[1:])):
                raise SamplewiseError("eval.eps_ladder must be a non-empty list of increasing "
                                      f"radii, got {self.eps_ladder!r}")
        if self.autoattack_eps is not None:
            parse_radius(self.autoattack_eps, "eval.autoattack_eps")
        if self.attacks is not None:
            if not isinstance(self.attacks, list) or not self.attacks or \
                    not all(isinstance(a, str) for a in self.attacks) or \
                    len(set(self.attacks)) != len(self.attacks):
                raise SamplewiseError("eval.attacks must be a non-empty list of distinct attack "
                                      f"names, got {self.attacks!r}")
            from ..attacks import ATTACKS  # the registry's own error lists the choices
            for name in self.attacks:
                ATTACKS.resolve(name)

    def ladder(self) -> list[tuple[str, float]]:
        """``(label, radius)`` for every radius of ``eps_ladder`` (empty without a ladder)."""
        return [(radius_label(r), parse_radius(r, "eval.eps_ladder"))
                for r in self.eps_ladder or ()]

    def middle(self) -> Optional[tuple[str, float]]:
        """The ladder's middle ``(label, radius)``: ``eps_ladder[len // 2]`` (None: no ladder)."""
        ladder = self.ladder()
        return ladder[len(ladder) // 2] if ladder else None

    def autoattack_radius(self) -> Optional[float]:
        """AutoAttack's radius: ``autoattack_eps``, else the ladder's middle, else None (the
        cell's ε)."""
        if self.autoattack_eps is not None:
            return parse_radius(self.autoattack_eps, "eval.autoattack_eps")
        middle = self.middle()
        return None if middle is None else middle[1]

    def wants_autoattack(self, seed: int) -> bool:
        """Whether the cells of ``seed`` get AutoAttack."""
        return self.autoattack and (self.autoattack_seeds is None or seed in self.autoattack_seeds)

    def autoattack_label(self) -> str:
        if self.autoattack_version == "custom":
            return "AutoAttack (" + "+".join(self.autoattack_attacks or []) + ")"
        return f"AutoAttack ({self.autoattack_version})"


def parse_radius(value, where: str) -> float:
    """An L∞ radius given as a number or as a ``"a/b"`` string (``"2/255"``); > 0 and finite."""
    r = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        r = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9.]+)\s*/\s*([0-9.]+)\s*", value)
        try:
            r = float(m.group(1)) / float(m.group(2)) if m else float(value)
        except (ValueError, ZeroDivisionError):
            r = None
    if r is None or not math.isfinite(r) or r <= 0:
        raise SamplewiseError(f"{where}: a radius is a number > 0 or a fraction such as "
                              f"'2/255', got {value!r}")
    return r


def radius_label(value) -> str:
    """How a radius is shown in tables: a fraction as written (``2/255``), a number with %g."""
    return value.replace(" ", "") if isinstance(value, str) else f"{float(value):g}"


@dataclass(frozen=True)
class Axis:
    """One grid axis: its YAML key (``fractions``), its column name (``fraction``), the type of
    its values, the prefix of its part of a cell id (``f`` -> ``f0.3``) and a default (None:
    required)."""

    key: str
    column: str
    kind: type = str
    prefix: str = ""
    default: Optional[tuple] = None


@dataclass(frozen=True)
class StudySpec:
    """What a study accepts: its name, its grid axes, its own sections (name -> dataclass built
    with :func:`samplewise.config.build`, so they are type-checked) and the TrainConfig keys the
    grid sets per cell (refused in ``base``)."""

    name: str
    axes: tuple[Axis, ...]
    sections: Mapping[str, type] = field(default_factory=dict)
    reserved: tuple[str, ...] = ("seed", "eval_n", "eval_steps")


@dataclass(frozen=True)
class StudyConfig:
    """A parsed study config (see the module docstring)."""

    study: str
    base: TrainConfig
    grid: dict            # axis column -> tuple of values
    seeds: tuple
    eval: EvalSpec
    sections: dict        # section name -> dataclass instance
    raw: dict             # the mapping it was read from (for results.json)
    source: Optional[str] = None


@dataclass(frozen=True)
class Cell:
    """One run of the study: its id, its grid values (and ``seed``) and its training config."""

    id: str
    params: dict
    cfg: TrainConfig


def config_section(cls, values, where: str):
    """The dataclass ``cls`` built from the mapping ``values`` (None: its defaults); a non-mapping
    or an unknown key is a :class:`SamplewiseError` naming the section ``where``."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise SamplewiseError(f"study config '{where}' must be a mapping, got {values!r}")
    try:
        built = build(cls, values)
    except SamplewiseError as exc:
        raise SamplewiseError(f"study config section '{where}': {exc}") from None
    except TypeError as exc:  # a dataclass refusing its arguments
        raise SamplewiseError(f"study config section '{where}': {exc}") from None
    # every cell of a study trains under the one recipe its config states: recipe keys it leaves
    # unset take the code defaults, not each objective's own (the methods compared share them)
    return with_recipe(built) if cls is TrainConfig else built


def _axis_values(axis: Axis, values) -> tuple:
    if values is None:
        if axis.default is None:
            raise SamplewiseError(f"study config: grid.{axis.key} is required")
        values = axis.default
    if not isinstance(values, (list, tuple)) or not values:
        raise SamplewiseError(f"study config: grid.{axis.key} must be a non-empty list, "
                              f"got {values!r}")
    out = []
    for v in values:
        ok = (isinstance(v, axis.kind) and not isinstance(v, bool)) or \
            (axis.kind is float and isinstance(v, int) and not isinstance(v, bool))
        if not ok or (axis.kind is str and not v):
            raise SamplewiseError(f"study config: grid.{axis.key} expects {axis.kind.__name__} "
                                  f"values, got {v!r}")
        out.append(axis.kind(v))
    if len(set(out)) != len(out):
        raise SamplewiseError(f"study config: grid.{axis.key} lists a value twice: {values!r}")
    return tuple(out)


def _seeds(values) -> tuple:
    values = [0] if values is None else values
    if isinstance(values, int) and not isinstance(values, bool):
        values = [values]
    if not isinstance(values, (list, tuple)) or not values or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in values):
        raise SamplewiseError(f"study config: seeds must be a non-empty list of integers >= 0, "
                              f"got {values!r}")
    if len(set(values)) != len(values):
        raise SamplewiseError(f"study config: seeds lists a seed twice: {values!r}")
    return tuple(values)


def study_dir(out_dir, *, existing: bool = False) -> Path:
    """The study's output directory, created (``existing``: it must already be there, as for
    a report of a study's progress); a file of that name is one clear error."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SamplewiseError(f"--out {out} exists and is not a directory")
    if existing and not out.is_dir():
        raise SamplewiseError(f"--out {out} does not exist: no study to report on yet")
    out.mkdir(parents=True, exist_ok=True)
    return out


def read_source(source) -> tuple[str | None, Any]:
    """``(path or None, raw mapping)`` of a study config given as a YAML path or a mapping."""
    if isinstance(source, (str, Path)):
        return str(source), read_yaml(source)
    if isinstance(source, dict):
        return None, source
    raise SamplewiseError("a study config is a YAML file or a mapping, got "
                          f"{type(source).__name__}")


def load_study(source, spec: StudySpec) -> StudyConfig:
    """Read and validate a study config (a YAML path or a mapping) for study ``spec``.

    Example:
        >>> cfg = load_study("configs/study-coreset-digits.yaml", CORESET_SPEC)
    """
    if isinstance(source, StudyConfig):
        return source
    path, raw = read_source(source)
    allowed = (*TOP_KEYS, *spec.sections)
    unknown = sorted(set(map(str, raw)) - set(allowed))
    if unknown:
        raise SamplewiseError(f"unknown study config key(s) {', '.join(unknown)}; valid keys: "
                              f"{', '.join(allowed)}")
    if raw.get("study", spec.name) != spec.name:
        raise SamplewiseError(f"this is a '{raw.get('study')}' study config, not '{spec.name}'")
    base_raw = raw.get("base") or {}
    if not isinstance(base_raw, dict):
        raise SamplewiseError("study config 'base' must be a mapping of TrainConfig keys")
    taken = sorted(set(base_raw) & set(spec.reserved))
    if taken:
        raise SamplewiseError(f"study config: base.{taken[0]} is set per cell by the study "
                              "(seeds, grid or eval section); remove it from base")
    base = validate_train(config_section(TrainConfig, base_raw, "base"))
    grid_raw = raw.get("grid") or {}
    if not isinstance(grid_raw, dict):
        raise SamplewiseError("study config 'grid' must be a mapping of axis: [values]")
    keys = [a.key for a in spec.axes]
    unknown = sorted(set(map(str, grid_raw)) - set(keys))
    if unknown:
        raise SamplewiseError(f"unknown grid axis {', '.join(unknown)} for a {spec.name} study; "
                              f"valid axes: {', '.join(keys)}")
    grid = {a.column: _axis_values(a, grid_raw.get(a.key)) for a in spec.axes}
    sections = {name: config_section(cls, raw.get(name), name) for name, cls in spec.sections.items()}
    return StudyConfig(study=spec.name, base=base, grid=grid, seeds=_seeds(raw.get("seeds")),
                       eval=config_section(EvalSpec, raw.get("eval"), "eval"), sections=sections,
                       raw=json.loads(json.dumps(raw, default=str)), source=path)


# ----------------------------------------------------------------------------- cells
def id_part(value) -> str:
    """``value`` as a piece of a cell id: floats in ``%g``, anything unsafe in a path -> ``_``."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9.+=_-]", "_", text)


def cell_id(params: Mapping[str, Any], axes: Sequence[Axis]) -> str:
    """``<prefix><value>-...-s<seed>`` in axis order, e.g. ``easycore-f0.3-trades-s1``."""
    parts = [a.prefix + id_part(params[a.column]) for a in axes]
    return "-".join([*parts, f"s{params['seed']}"])


def expand(cfg: StudyConfig, spec: StudySpec) -> list[dict]:
    """Every combination of the grid axes and the seeds, as ``{column: value, ..., "seed": s}``
    in axis order (seeds innermost)."""
    columns = [a.column for a in spec.axes]
    combos = itertools.product(*(cfg.grid[c] for c in columns), cfg.seeds)
    return [dict(zip([*columns, "seed"], values)) for values in combos]


def make_cells(items: Sequence[tuple[dict, TrainConfig]], axes: Sequence[Axis]) -> list[Cell]:
    """Cells from ``(params, cfg)`` pairs, sorted by id; ids must be unique."""
    cells = [Cell(cell_id(p, axes), dict(p), cfg) for p, cfg in items]
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SamplewiseError(f"two cells share the id '{dup}'; make the grid values distinct")
    return sorted(cells, key=lambda c: c.id)


def parse_share(text) -> Optional[tuple[int, int]]:
    """``"i/n"`` -> ``(i, n)`` with ``1 <= i <= n`` (None stays None).

    Example:
        >>> parse_share("2/4")
        (2, 4)
    """
    if text is None:
        return None
    if isinstance(text, tuple) and len(text) == 2:
        i, n = text
    else:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
        if not m:
            raise SamplewiseError(f"--cells must be of the form i/n (e.g. 2/8), got {text!r}")
        i, n = int(m.group(1)), int(m.group(2))
    if not (isinstance(i, int) and isinstance(n, int) and 1 <= i <= n):
        raise SamplewiseError(f"--cells i/n needs 1 <= i <= n, got {i}/{n}")
    return i, n


def share_of(cells: Sequence[Cell], share, done=()) -> list[Cell]:
    """The ``i``-th of ``n`` shares of the cells whose ids are not in ``done`` (those a ledger
    holds): round-robin over them sorted by id (all of them when ``share`` is None).

    Shares ``1/n, ..., n/n`` partition those cells, whatever order they were given in, and
    differ in size by at most one: sharing what is left, not the whole grid, keeps the workers
    balanced however many cells the ledger already holds (a share of the whole grid left one
    worker 11 cells and the other 31). Workers started with the same ledger get one partition.
    """
    ordered = sorted((c for c in cells if c.id not in done), key=lambda c: c.id)
    parsed = parse_share(share)
    if parsed is None:
        return ordered
    i, n = parsed
    return ordered[i - 1::n]


# ----------------------------------------------------------------------------- running
@contextlib.contextmanager
def file_lock(path: Path, *, wait: bool) -> Iterator[bool]:
    """An advisory ``flock`` on ``path`` (released when the process dies); yields whether it
    was acquired. ``wait=False`` gives up at once when another process holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cell_dir(out_dir, cell: Cell) -> Path:
    return Path(out_dir) / CELLS_DIR / cell.id


def is_finished(path: Path) -> bool:
    return (path / "result.json").is_file() and (path / "model.pt").is_file()


def check_same_settings(cell: Cell, path: Path) -> None:
    """Refuse to reuse a cell directory that was run with another recipe (a changed config);
    runtime keys may differ (:func:`samplewise.config.check_same_run`)."""
    saved_path = path / "config.yaml"
    if not saved_path.is_file():
        return
    check_same_run(read_yaml(saved_path), cell.cfg, where=str(path), asker="the study now",
                   remedy="use another --out or delete that cell")


def run_cell(cell: Cell, path: Path, ev: EvalSpec, *, device: Optional[str] = None) -> str:
    """Train (or resume) one cell, then add AutoAttack if asked; returns what was done."""
    from ..runs import run_training
    from ..checkpoint import CHECKPOINT

    check_same_settings(cell, path)
    if cell.cfg.threads:  # also for a cell that only needs AutoAttack
        import torch
        torch.set_num_threads(cell.cfg.threads)
    finished = is_finished(path)
    done = []
    if not finished:
        resume = (path / CHECKPOINT).is_file()
        run_training(cell.cfg, path, resume=resume, device=device)
        done.append("resumed" if resume else "trained")
    if ev.wants_autoattack(cell.params["seed"]) and read_autoattack(path, ev) is None:
        autoattack_cell(cell, path, ev, device=device)
        done.append("autoattack")
    if ev.ladder() and ladder_cell(cell, path, ev, device=device):
        done.append("ladder")
    if ev.attacks and attacks_cell(cell, path, ev, device=device):
        done.append("attacks")
    return "+".join(done) or "already finished"


def _autoattack_settings(n, version, attacks) -> dict:
    """What an AutoAttack result was made with: its slice size, version and (custom) attacks."""
    return {"n": n, "version": version,
            "attacks": list(attacks or []) if version == "custom" else None}


def read_autoattack(path: Path, ev: EvalSpec) -> Optional[dict]:
    """The cell's cached ``autoattack.json`` if it was made as ``ev`` asks (its slice size,
    version and attacks), else None: a result made on fewer images or with other attacks is
    stale and is computed again, never reported under ``ev``'s label. One made at another
    radius is refused."""
    file = path / AUTOATTACK_FILE
    if not file.is_file():
        return None
    res = json.loads(file.read_text())
    want = ev.autoattack_radius() if ev.autoattack else None
    have = res.get("eps")
    if want is not None and not math.isclose(have, want, rel_tol=1e-9):
        raise SamplewiseError(f"{file} was computed at eps={have:g}, but the study now asks for "
                              f"AutoAttack at eps={want:g}; delete it to recompute")
    made = res.get("settings")
    if made is None:  # written before the settings were recorded: read them off the result
        aa = res.get("autoattack") or {}
        made = _autoattack_settings(res.get("n"), aa.get("version"), aa.get("attacks"))
    wanted = _autoattack_settings(ev.autoattack_n, ev.autoattack_version, ev.autoattack_attacks)
    return res if made == wanted else None


def autoattack_cell(cell: Cell, path: Path, ev: EvalSpec, *, device: Optional[str] = None) -> dict:
    """AutoAttack on the fixed ``ev.autoattack_n`` test slice at ``ev.autoattack_radius()`` (the
    cell's ε when None), written to ``autoattack.json``."""
    from ..evaluate import evaluate
    from ..models import load_model
    from ..runs import load_bundle

    device = device or cell.cfg.device
    result = json.loads((path / "result.json").read_text())
    model = load_model(path, device=device)
    eps = ev.autoattack_radius()
    res = evaluate(model, load_bundle(cell.cfg).test, attack="autoattack",
                   eps=result["eval"]["eps"] if eps is None else eps, n=ev.autoattack_n,
                   batch_size=ev.batch_size,
                   device=device, aa_version=ev.autoattack_version,
                   aa_attacks=ev.autoattack_attacks)
    made = _autoattack_settings(ev.autoattack_n, ev.autoattack_version, ev.autoattack_attacks)
    io.write_json(path / AUTOATTACK_FILE, {**res, "settings": made})
    return res


def ladder_settings(ev: EvalSpec) -> dict:
    """The settings every entry of a cell's ``ladder.json`` was computed with."""
    return {"attack": "pgd", "steps": ev.pgd_steps, "n": ev.n, "seed": 0,
            "batch_size": ev.batch_size, "alpha": "eps/4"}


def read_cache(file: Path, settings: dict, key: str) -> dict:
    """The entries (``saved[key]``) of a cell's evaluation cache ``file`` (``{"settings": ...,
    key: {entry: evaluate() result}}``); empty when there is none, refused when it was made
    with other settings."""
    if not file.is_file():
        return {}
    saved = json.loads(file.read_text())
    if saved.get("settings") != settings:
        raise SamplewiseError(f"{file} was computed with {saved.get('settings')}, the study now "
                              f"asks for {settings}; delete it to recompute")
    return saved[key]


def fill_cache(cell: Cell, path: Path, file: Path, settings: dict, key: str, wanted: dict,
               run, *, device: Optional[str] = None) -> list:
    """Compute every entry of ``wanted`` (entry -> argument) missing from the cache ``file``:
    ``run(model, bundle, argument, device)`` on the cell's saved model and data, each written
    as soon as it is made (a killed evaluation keeps the entries it finished). Returns the
    arguments computed by this call."""
    from ..models import load_model
    from ..runs import load_bundle

    done = read_cache(file, settings, key)
    todo = [k for k in wanted if k not in done]
    if not todo:
        return []
    device = device or cell.cfg.device
    model = load_model(path, device=device)
    bundle = load_bundle(cell.cfg)
    for k in todo:
        done[k] = run(model, bundle, wanted[k], device)
        io.write_json(file, {"settings": settings, key: done})
    return [wanted[k] for k in todo]


def read_ladder(path: Path, ev: EvalSpec) -> dict:
    """The cached ladder results of a cell directory (``{str(radius): evaluate() result}``);
    empty when there are none, refused when they were made with other settings."""
    return read_cache(path / LADDER_FILE, ladder_settings(ev), "radii")


def ladder_cell(cell: Cell, path: Path, ev: EvalSpec, *, device: Optional[str] = None) -> list:
    """PGD-``ev.pgd_steps`` accuracy (step = radius/4, seed 0) on the fixed ``ev.n`` test slice
    at every radius of ``ev.eps_ladder`` not yet in ``ladder.json``; each result is written as
    soon as it is made, so a killed evaluation keeps the radii it finished. Returns the radii
    computed by this call."""
    from ..evaluate import evaluate
    from ..threat import ThreatModel

    def run(model, bundle, r, device):
        threat = ThreatModel.resolve(None, eps=r, steps=ev.pgd_steps)  # step r/4
        return evaluate(model, bundle.test, attack="pgd", eps=threat.eps, alpha=threat.alpha,
                        steps=threat.steps, n=ev.n, batch_size=ev.batch_size, seed=0,
                        device=device)

    return fill_cache(cell, path, path / LADDER_FILE, ladder_settings(ev), "radii",
                      {str(r): r for _, r in ev.ladder()}, run, device=device)


def attacks_cache_settings(ev: EvalSpec) -> dict:
    """The settings every entry of a cell's ``attacks.json`` was computed with (each entry's
    result states its attack, ε, step and steps)."""
    return {"threat": "the cell's", "steps": ev.pgd_steps, "n": ev.n, "seed": 0,
            "batch_size": ev.batch_size}


def read_attacks(path: Path, ev: EvalSpec) -> dict:
    """The cached ``eval.attacks`` results of a cell directory (``{name: evaluate() result}``);
    empty when there are none, refused when they were made with other settings."""
    return read_cache(path / ATTACKS_FILE, attacks_cache_settings(ev), "attacks")


def attacks_cell(cell: Cell, path: Path, ev: EvalSpec, *, device: Optional[str] = None) -> list:
    """Every attack of ``ev.attacks`` not yet in ``attacks.json``, on the fixed ``ev.n`` test
    slice at the cell's threat model: ε and step from the dataset card and the cell's config
    (:meth:`~samplewise.threat.ThreatModel.resolve`, as the cell's final evaluation), steps
    ``ev.pgd_steps``, seed 0. Returns the attacks computed by this call."""
    from ..evaluate import evaluate
    from ..threat import ThreatModel

    def run(model, bundle, name, device):
        threat = ThreatModel.resolve(bundle.card, eps=cell.cfg.eps, alpha=cell.cfg.alpha,
                                     steps=ev.pgd_steps)
        return evaluate(model, bundle.test, attack=name, threat=threat, n=ev.n,
                        batch_size=ev.batch_size, seed=0, device=device)

    return fill_cache(cell, path, path / ATTACKS_FILE, attacks_cache_settings(ev), "attacks",
                      {a: a for a in ev.attacks or ()}, run, device=device)


def needs_work(cell: Cell, path: Path, ev: EvalSpec) -> bool:
    """Whether the cell is unfinished (training, its AutoAttack when asked for, a radius of
    its ``eps_ladder`` or an attack of ``eval.attacks``)."""
    if not is_finished(path) or (ev.wants_autoattack(cell.params["seed"])
                                 and read_autoattack(path, ev) is None):
        return True
    done = read_ladder(path, ev)
    attacked = read_attacks(path, ev)
    return any(str(r) not in done for _, r in ev.ladder()) or \
        any(a not in attacked for a in ev.attacks or ())


def claim_next(cells: Sequence[Cell], out_dir, ev: EvalSpec, skip=()):
    """The first cell (in the given order) that needs work, is not in ``skip`` and whose
    directory lock (:func:`samplewise.runlock.try_hold`) no process holds: ``(cell, lock)``
    with the lock taken (enter it to release it at the end), or None."""
    for cell in cells:
        path = cell_dir(out_dir, cell)
        if cell.id in skip or not needs_work(cell, path, ev):
            continue
        lock = runlock.try_hold(path)
        if lock is None:
            continue
        if needs_work(cell, path, ev):  # still: it may have finished between look and lock
            return cell, lock
        with lock:
            pass
    return None


def pace(finished_then: int, finished_now: int, total: int, seconds: float) -> str:
    """How far the study is and, at the pace of every worker together since this one started
    (cells finished by any of them over the time elapsed), how long the rest will take.

    Example:
        >>> pace(10, 30, 90, 1200.0)
        '30 of 90 cells finished; ~60 min left at the pace so far (1.0 cells/min)'
    """
    text = f"{finished_now} of {total} cells finished"
    gained = finished_now - finished_then
    if gained <= 0 or seconds <= 0 or finished_now >= total:
        return text
    per_min = 60.0 * gained / seconds
    left = (total - finished_now) / per_min
    when = f"~{left:.0f} min" if left < 120 else f"~{left / 60:.1f} h"
    rate = f"{per_min:.1f} cells/min" if per_min >= 1 else f"{1 / per_min:.1f} min a cell"
    return f"{text}; {when} left at the pace so far ({rate})"


def run_cells(cells: Sequence[Cell], out_dir, ev: EvalSpec, *, share=None,
              device: Optional[str] = None, done=(),
              after_cell: Optional[Callable[[Cell], None]] = None) -> dict[str, str]:
    """Run this share's cells (all when ``share`` is None); returns id -> status.

    The cells whose ids are in ``done`` (those a :mod:`~samplewise.studies.ledger` holds) are
    finished elsewhere: nothing is run or checked for them, the shares split the others
    (:func:`share_of`), and a run without a share reports them as ``from the ledger``.
    ``after_cell(cell)`` is called after each cell this worker ran to the end (not after a
    failed one), with the cell's lock released: the study publishes its results and records
    the cell in its ledger there, so that a worker killed later loses nothing finished.

    Any number of processes may run this at once on one study directory (on one machine, or
    on many sharing its filesystem): each repeatedly claims the first unfinished cell, in id
    order, whose directory lock no process holds (:func:`claim_next`), runs it holding that
    lock, and looks again, until no unfinished cell is free. So no cell runs twice at once, a
    cell whose worker died (its lock died with it) is claimed by the next worker that looks,
    and a cell held by a live worker is left to it (status ``running elsewhere``). A cell
    directory run with other settings (the config changed) is refused up front. A cell that
    fails with a :class:`SamplewiseError` (e.g. a diverged loss) is logged and reported as
    ``failed: ...``; this worker does not try it again, the other cells still run. SIGTERM or
    SIGINT between cells stops the worker before it claims another (:mod:`samplewise.preemption`;
    within a cell's training, the training checkpoints and stops).
    """
    from tqdm.auto import tqdm

    todo = share_of(cells, share, done)
    status: dict[str, str] = {} if share is not None else \
        {c.id: LEDGER_STATUS for c in cells if c.id in done}
    mine = sorted([*todo, *(c for c in cells if c.id in status)], key=lambda c: c.id)
    for cell in todo:  # a changed config is one clear error before anything runs
        check_same_settings(cell, cell_dir(out_dir, cell))
        read_autoattack(cell_dir(out_dir, cell), ev)
        read_ladder(cell_dir(out_dir, cell), ev)
        read_attacks(cell_dir(out_dir, cell), ev)
    log.info("%d of %d cells to run%s%s", len(todo), len(cells),
             "" if share is None else " (share %d/%d)" % parse_share(share),
             f" ({len(status)} finished in the ledger)" if status else "")
    status.update({c.id: "already finished" for c in todo
                   if not needs_work(c, cell_dir(out_dir, c), ev)})
    bar = tqdm(total=len(mine), initial=len(status), desc="cells", unit="cell",
               dynamic_ncols=True, disable=None)
    start, finished_at_start = time.monotonic(), len(status)
    with preemption.graceful_stop(), bar:
        while not preemption.requested() and \
                (claim := claim_next(todo, out_dir, ev, skip=status)) is not None:
            cell, lock = claim
            bar.set_postfix_str(cell.id)
            t0 = time.perf_counter()
            with lock:
                try:
                    status[cell.id] = run_cell(cell, cell_dir(out_dir, cell), ev, device=device)
                except SamplewiseError as exc:
                    status[cell.id] = f"failed: {exc}"
                    log.error("cell %s failed: %s", cell.id, exc)
            if after_cell is not None and not status[cell.id].startswith("failed"):
                after_cell(cell)
            bar.update(1)
            finished = sum(c.id in done or not needs_work(c, cell_dir(out_dir, c), ev)
                           for c in mine)
            log.info("cell %d/%d %s %s in %.1fs; %s", len(status), len(mine), cell.id,
                     status[cell.id], time.perf_counter() - t0,
                     pace(finished_at_start, finished, len(mine), time.monotonic() - start))
        if preemption.requested():
            signum = preemption.requested()
            raise preemption.Preempted(signum, f"stopped by {preemption.signal_name(signum)} "
                                       f"between cells ({len(status)} of {len(mine)} done or "
                                       "taken)")
    for cell in todo:
        status.setdefault(cell.id, "already finished"
                          if not needs_work(cell, cell_dir(out_dir, cell), ev)
                          else "running elsewhere")
    return {c.id: status[c.id] for c in mine}
