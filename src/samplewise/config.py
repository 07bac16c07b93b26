"""Run configuration: frozen dataclasses are the single source of truth.

A run's settings come from, in order (each beats the ones before it): the dataclass defaults,
the objective's recipe defaults, a command's own defaults (``distill``: ``objective=saad``), an
optional YAML file (safe loader), ``key=value`` overrides from the command line, then explicit
flags. Every value is type-checked against the field's annotation; unknown keys are refused.
``None`` means "the component's own default" (e.g. ``eps=None`` takes the dataset card's ε).

Recipe defaults: the keys of :data:`RECIPE_KEYS` are ``None`` in :class:`TrainConfig` until
:func:`with_recipe` fills them from the objective's ``recipe`` (e.g. the distillation
objectives' ``weight_decay=2e-4``), else from the code default. ``samplewise.runs.run_training``
does that for the command line and the Python API alike, so both train the same recipe.

Recipe and runtime: every key is the recipe (what is trained) except :data:`RUNTIME_KEYS`
(where and how fast). Whether a config describes a run already made (a resume, a study's cached
cell, a score file's reuse) is decided by :func:`check_same_run` alone, from the recipe.

Example:
    >>> cfg = load_config(TrainConfig, overrides=["epochs=3", "lr=0.05"])
    >>> cfg.epochs, cfg.lr
    (3, 0.05)
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import yaml

from .errors import SamplewiseError


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training (or distillation) run needs."""

    dataset: str = "digits"
    model: str = "cnn-small"
    model_args: dict = field(default_factory=dict)
    objective: str = "standard"
    objective_args: dict = field(default_factory=dict)
    teacher: Optional[str] = None          # distillation only: model file, run dir or robustbench:ID
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: Optional[float] = None   # None: the objective's recipe default (RECIPE_KEYS)
    nesterov: bool = False
    schedule: str = "multistep"            # multistep | cosine | onecycle | constant
    milestones: tuple = (0.5, 0.75)        # fractions of the epochs (multistep)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    eps: Optional[float] = None            # None: the dataset card's ε
    alpha: Optional[float] = None          # None: the card's step
    attack_steps: int = 10                 # inner maximisation steps during training
    augment: Optional[bool] = None         # None: the card's default augmentation
    train_size: Optional[int] = None       # seeded stratified sample of the training set
    subset: Optional[str] = None           # .npy of dataset indices to train on
    budget: str = "epochs"                 # epochs | iterations (coreset runs: same epochs or steps)
    seed: int = 0
    eval_n: int = 500                      # held-out slice for per-epoch and final evaluation
    eval_steps: int = 20                   # PGD steps for result.json's robust_acc
    monitor_steps: int = 10                # PGD steps for the per-epoch monitor
    grad_clip: Optional[float] = None
    swa_start: Optional[float] = None      # fraction of epochs after which the weights are averaged
    device: str = "cpu"
    channels_last: Optional[bool] = None   # NHWC layout; None: auto (on for conv nets on the CPU)
    amp: Optional[str] = None              # None | "bf16": autocast the training step
    compile: bool = False                  # torch.compile the model used in the step
    threads: Optional[int] = None
    data_root: Optional[str] = None
    download: bool = False
    progress: bool = True
    tensorboard: bool = False              # per-epoch metrics as TensorBoard scalars in RUN/tb/


#: keys that say where and how fast a run trains, never what it learns: a run resumed, or a study
#: cell reused, with other values of these is the same run (:func:`same_run`). ``channels_last``
#: and ``compile`` change the float rounding at most, as ``threads`` or ``device`` do; ``amp``
#: (bf16 arithmetic) changes the numerics and belongs to the recipe
RUNTIME_KEYS = frozenset({"device", "threads", "channels_last", "compile", "data_root", "download",
                          "progress", "tensorboard"})
#: recipe facts a run records in its ``config.yaml`` beside its keys, compared when both sides
#: have them: the data trained on, by content (a ``subset`` file is named by a path, which is a
#: location; its indices' checksum is the recipe)
CONTENT_KEYS = ("fingerprint", "subset_checksum")
#: keys whose ``None`` means "the component's default", resolved when the run starts (the card's
#: ε and step, the objective's recipe): a wanted ``None`` matches any recorded value
DEFAULTED_KEYS = frozenset({"eps", "alpha", "weight_decay"})

_SCHEDULES = ("multistep", "cosine", "onecycle", "constant")

#: keys an objective's recipe may set (``Objective.recipe``), with their code defaults; they stay
#: ``None`` in a :class:`TrainConfig` until :func:`with_recipe` resolves them
RECIPE_KEYS: dict[str, Any] = {"weight_decay": 5e-4}


def with_recipe(cfg: TrainConfig, recipe: Optional[dict] = None) -> TrainConfig:
    """``cfg`` with its unset recipe keys filled: the ``recipe``'s value, else the code default.

    A value already set (by the caller, a YAML file, ``--set`` or a flag) always stays.

    Example:
        >>> with_recipe(TrainConfig(), {"weight_decay": 2e-4}).weight_decay
        0.0002
        >>> with_recipe(TrainConfig(weight_decay=0.0), {"weight_decay": 2e-4}).weight_decay
        0.0
    """
    recipe = recipe or {}
    unknown = sorted(set(recipe) - set(RECIPE_KEYS))
    if unknown:
        raise SamplewiseError(f"a recipe may set only {', '.join(RECIPE_KEYS)}; got {', '.join(unknown)}")
    fill = {k: coerce(TrainConfig, k, recipe.get(k, default)) for k, default in RECIPE_KEYS.items()
            if getattr(cfg, k) is None}
    return dataclasses.replace(cfg, **fill) if fill else cfg


def recipe_of(cfg, extra: tuple = ()) -> dict:
    """What a run trains: a :class:`TrainConfig`, or a run's saved ``config.yaml`` mapping, as
    plain data without the :data:`RUNTIME_KEYS` and the ``subset`` path (plus the
    :data:`CONTENT_KEYS` a mapping records). Keys an older ``config.yaml`` lacks are absent. ``extra``: further keys
    of a mapping that belong to what was made from the run (a score file's ``mode``), kept too.

    Example:
        >>> "device" in recipe_of(TrainConfig()), recipe_of(TrainConfig())["lr"]
        (False, 0.1)
    """
    data = to_dict(cfg) if isinstance(cfg, TrainConfig) else dict(cfg)
    keys = [f.name for f in fields(TrainConfig)
            if f.name not in RUNTIME_KEYS and f.name != "subset"] + [*CONTENT_KEYS, *extra]
    return {k: list(data[k]) if isinstance(data[k], tuple) else data[k] for k in keys if k in data}


def run_differences(saved, wanted, extra: tuple = ()) -> list[str]:
    """The recipe keys in which ``wanted`` is not the run ``saved`` (either a
    :class:`TrainConfig` or a ``config.yaml`` mapping); empty: the same run.

    Only keys both sides state are compared (an older ``config.yaml`` lacks some), and a wanted
    ``None`` of a :data:`DEFAULTED_KEYS` key matches any saved value.

    Example:
        >>> run_differences(TrainConfig(lr=0.1), TrainConfig(lr=0.1, threads=2, device="cpu"))
        []
        >>> run_differences(TrainConfig(lr=0.1), TrainConfig(lr=0.05))
        ['lr']
    """
    have, want = recipe_of(saved, extra), recipe_of(wanted, extra)
    return [k for k, v in want.items()
            if k in have and have[k] != v and not (v is None and k in DEFAULTED_KEYS)]


def same_run(saved, wanted) -> bool:
    """Whether ``wanted`` describes the run ``saved`` (:func:`run_differences` is empty)."""
    return not run_differences(saved, wanted)


def check_same_run(saved, wanted, *, where, extra: tuple = (), asker: str = "this run",
                   remedy: str = "resume with the run's own settings or pass --overwrite") -> None:
    """Refuse, naming every differing key, to take ``wanted`` for the run ``saved`` (the one
    verdict behind a resume, a study's cached cell and a score file's reuse).

    Example:
        >>> check_same_run({"epochs": 3}, TrainConfig(epochs=3, device="cpu"), where="runs/a")
    """
    diff = run_differences(saved, wanted, extra)
    if diff:
        have, want = recipe_of(saved, extra), recipe_of(wanted, extra)
        was = ", ".join(f"{k}={have[k]!r}" for k in diff)
        now = ", ".join(f"{k}={want[k]!r}" for k in diff)
        raise SamplewiseError(f"{where} was run with {was}, but {asker} asks for {now}; {remedy}")


def validate_train(cfg: TrainConfig) -> TrainConfig:
    """Range checks that the type checker cannot express."""
    _positive(cfg, "epochs", "batch_size")
    _positive(cfg, "lr", allow_zero=True)
    for name in ("eps", "alpha"):
        v = getattr(cfg, name)
        if v is not None and (not math.isfinite(v) or v < 0 or (name == "alpha" and v == 0)):
            raise SamplewiseError(f"{name} must be {'>' if name == 'alpha' else '>='} 0, got {v}")
    if cfg.attack_steps < 0 or cfg.eval_steps < 0 or cfg.monitor_steps < 0:
        raise SamplewiseError("attack steps must be >= 0")
    if cfg.schedule not in _SCHEDULES:
        raise SamplewiseError(f"unknown schedule {cfg.schedule!r}; choose from: {', '.join(_SCHEDULES)}")
    if cfg.budget not in ("epochs", "iterations"):
        raise SamplewiseError(f"budget must be 'epochs' or 'iterations', got {cfg.budget!r}")
    if cfg.train_size is not None and cfg.train_size < 1:
        raise SamplewiseError(f"train_size must be >= 1, got {cfg.train_size}")
    if cfg.swa_start is not None and not 0 <= cfg.swa_start < 1:
        raise SamplewiseError(f"swa_start must be a fraction in [0, 1), got {cfg.swa_start}")
    if cfg.grad_clip is not None and not cfg.grad_clip > 0:  # also refuses NaN
        raise SamplewiseError(f"grad_clip must be > 0, got {cfg.grad_clip}")
    _positive(cfg, "momentum", "weight_decay", "warmup_epochs", allow_zero=True)
    _positive(cfg, "gamma")
    check_device(cfg.device)
    if not all(isinstance(m, (int, float)) and not isinstance(m, bool) and 0 <= m <= 1
               for m in cfg.milestones):
        raise SamplewiseError(f"milestones must be fractions of the epochs in [0, 1], got {cfg.milestones}")
    if cfg.amp not in (None, "bf16"):
        raise SamplewiseError(f"amp must be unset or 'bf16', got {cfg.amp!r}")
    if cfg.threads is not None and cfg.threads < 1:
        raise SamplewiseError(f"threads must be >= 1, got {cfg.threads}")
    if cfg.eval_n < 1:
        raise SamplewiseError(f"eval_n must be >= 1, got {cfg.eval_n}")
    return cfg


def check_device(device: str) -> None:
    """A device string torch understands, and CUDA only where it is available."""
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SamplewiseError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SamplewiseError(f"device {device!r} requested but CUDA is not available here "
                              "(use --device cpu)")


def _positive(cfg, *names, allow_zero=False):
    for name in names:
        v = getattr(cfg, name)
        if v is None:  # a recipe key left to the objective's recipe (with_recipe)
            continue
        if not (v >= 0 if allow_zero else v > 0) or (isinstance(v, float) and not math.isfinite(v)):
            raise SamplewiseError(f"{name} must be {'>=' if allow_zero else '>'} 0, got {v}")


# --------------------------------------------------------------------------- parsing

class _SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python objects) that also reads ``1e-3`` as a float.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-3``), so ``lr: 1e-3`` or
    ``--set lr=1e-3`` would be the string ``'1e-3'`` and fail the type check; YAML 1.2 (and
    every user) reads it as a number.
    """


_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load`` plus YAML 1.2 exponent floats (``1e-3``); never builds objects."""
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(cls, key: str, value: Any) -> Any:
    """Check ``value`` against the annotation of ``cls.key`` (ints widen to floats)."""
    hints = _hints(cls)
    if key not in hints:
        valid = ", ".join(f.name for f in fields(cls))
        raise SamplewiseError(f"unknown config key {key!r}; valid keys: {valid}")
    return _coerce(hints[key], value, key)


def _coerce(tp, value, key):
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, (str, Path)):
            return str(value)
    elif tp is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is tuple or origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(value)
    elif tp is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
    else:  # pragma: no cover - annotations are limited to the kinds above
        return value
    name = getattr(tp, "__name__", str(tp))
    raise SamplewiseError(f"config key {key!r} expects {name}, got {value!r}")


def parse_override(text: str) -> tuple[str, Any]:
    """``"lr=0.05"`` → ``("lr", 0.05)``; values are read as YAML scalars or lists."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SamplewiseError(f"override {text!r} is not of the form key=value")
    try:
        value = safe_load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), _flow_pairs(value)


_FLOW_PAIR = re.compile(r"([A-Za-z_][\w-]*):(\S.*)")


def _flow_pairs(value: Any) -> Any:
    """``{width:2}`` → ``{"width": 2}``.

    In YAML a flow mapping needs a space after the colon: ``{width:2}`` is the key
    ``"width:2"`` with no value. On a command line (``--set model_args={width:2}``) nobody
    means that, so a value-less key ``name:value`` is split into ``name`` and ``value``.
    """
    if not isinstance(value, dict):
        return value
    out = {}
    for k, v in value.items():
        m = _FLOW_PAIR.fullmatch(k) if isinstance(k, str) and v is None else None
        if m:
            k, raw = m.group(1), m.group(2)
            try:
                v = safe_load_yaml(raw)
            except yaml.YAMLError:
                v = raw
        out[k] = _flow_pairs(v)
    return out


def read_yaml(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SamplewiseError(f"config file not found: {path}")
    try:
        data = safe_load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise SamplewiseError(f"{path}: not valid YAML{line}") from None
    except UnicodeDecodeError:
        raise SamplewiseError(f"{path}: not a text file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SamplewiseError(f"{path}: a config file must be a mapping of key: value")
    return data


def build(cls, values: dict) -> Any:
    """Instantiate ``cls`` from a mapping, type-checking every key."""
    if not isinstance(values, dict):
        raise SamplewiseError(f"expected a mapping for {cls.__name__}, got {type(values).__name__}")
    checked = {str(k): coerce(cls, str(k), v) for k, v in values.items()}
    return cls(**checked)


def load_config(cls=TrainConfig, path=None, overrides=(), defaults=None, **direct) -> Any:
    """Code defaults ← ``defaults`` (a command's own) ← YAML file ← ``key=value`` overrides ←
    direct keyword values (``None`` skipped). Recipe keys left unset stay ``None`` (see
    :func:`with_recipe`)."""
    values: dict = dict(defaults or {})
    if path is not None:
        values.update(read_yaml(path))
    for item in overrides:
        k, v = parse_override(item)
        values[k] = v
    values.update({k: v for k, v in direct.items() if v is not None})
    cfg = build(cls, values)
    return validate_train(cfg) if cls is TrainConfig else cfg


def to_dict(cfg) -> dict:
    """Plain-data view of a config (tuples become lists), for YAML/JSON output."""
    out = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def dump_yaml(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False)
