"""The distillation study's config: constants, :class:`TeacherSpec`, the grid spec and
:func:`load_distill_config` (checks the ``teachers`` list and the grid against it)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Optional, Sequence

from ...config import TrainConfig, validate_train
from ...errors import SamplewiseError
from ...objectives import OBJECTIVES
from .. import grid
from ..grid import Axis, StudyConfig, StudySpec, read_source

TITLE = "Distillation study"
NONE = "none"                  # the teacher column of student-alone cells
TEACHERS_DIR = "teachers"
TEACHER_EVAL = "eval.json"
TRANSFER_FILE = "transfer.json"
TRANSFER_STEPS = 10
RESERVED = ("seed", "eval_n", "eval_steps", "objective", "teacher")
DISTILL_COLUMNS = ("clean_acc", "pgd_acc", "autoattack_acc", "tas_train", "tas_test")


@dataclass(frozen=True)
class TeacherSpec:
    """One entry of ``teachers``: a given model (``path``) or one the study trains (``train``)."""

    name: str
    path: Optional[str] = None
    train: Optional[dict] = None


def distill_spec(teacher_names: Sequence[str]) -> StudySpec:
    """The study's grid: teachers (default: every named teacher) x methods."""
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
        if not isinstance(name, str) or not name or name != grid.id_part(name) or name == NONE:
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
            where = f"teachers.{name}.train"
            tcfg = validate_train(grid.config_section(TrainConfig, merged, where))
            if needs_teacher(tcfg.objective):
                raise SamplewiseError(f"study config teacher '{name}': objective "
                                      f"{tcfg.objective!r} needs a teacher itself")
            train_cfgs[name] = tcfg
        specs.append(TeacherSpec(name=name, path=path, train=train))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise SamplewiseError(f"study config: two teachers share a name: {names}")
    return specs, train_cfgs


def _method_settings(raw, base_raw: dict, methods: Sequence[str]) -> dict[str, TrainConfig]:
    """``method_settings: {method: {TrainConfig keys}}``: each listed method's own recipe (base
    plus these keys, e.g. SAAD's official ``swa_start`` or an ``objective_args`` preset)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SamplewiseError("study config 'method_settings' must be a mapping of "
                              "method: {TrainConfig keys}")
    out = {}
    for method, keys in raw.items():
        where = f"method_settings.{method}"
        if method not in methods:
            raise SamplewiseError(f"study config {where}: '{method}' is not in grid.methods "
                                  f"({', '.join(methods)})")
        if not isinstance(keys, dict) or not keys:
            raise SamplewiseError(f"study config {where} must be a non-empty mapping of "
                                  "TrainConfig keys")
        taken = sorted(set(map(str, keys)) & set(RESERVED))
        if taken:
            raise SamplewiseError(f"study config {where}.{taken[0]} is set per cell by the study")
        out[method] = validate_train(grid.config_section(TrainConfig, {**base_raw, **keys}, where))
    return out


def method_base(cfg: StudyConfig, method: str) -> TrainConfig:
    """The recipe of ``method``'s cells: ``base``, with its ``method_settings`` if any."""
    return cfg.sections.get("method_settings", {}).get(method, cfg.base)


def load_distill_config(source) -> StudyConfig:
    """Parse and check a distillation study config; ``cfg.sections`` holds ``teachers`` (the
    :class:`TeacherSpec` list), ``teacher_train`` (name -> TrainConfig of trained ones) and
    ``method_settings`` (method -> its cells' recipe, for the methods that have their own)."""
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
    rest = {k: v for k, v in raw.items() if k not in ("teachers", "method_settings")}
    cfg = grid.load_study(rest, distill_spec([s.name for s in specs]))
    known = {s.name for s in specs}
    for name in cfg.grid["teacher"]:
        if name not in known:
            raise SamplewiseError(f"grid.teachers names '{name}', which is not in teachers "
                                  f"({', '.join(sorted(known))})")
    for method in cfg.grid["method"]:
        OBJECTIVES.get(method)
    settings = _method_settings(raw.get("method_settings"), base_raw, cfg.grid["method"])
    return dataclasses.replace(cfg, sections={"teachers": specs, "teacher_train": train_cfgs,
                                              "method_settings": settings},
                               raw=json.loads(json.dumps(raw, default=str)), source=path)
