"""The distillation study's teachers: where each lives, training a ``train:`` teacher (under a
lock) and its cached clean / PGD / AutoAttack evaluation (``eval.json``)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional

from ... import io
from ...config import TrainConfig
from .. import grid
from ..grid import StudyConfig
from ..ledger import run_recipe
from .config import TEACHER_EVAL, TEACHERS_DIR, TeacherSpec

log = logging.getLogger(__name__)

BUSY = "busy"  # teacher_eval(wait=False): another process holds the teacher's evaluation lock


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


def ensure_teacher(cfg: StudyConfig, out_dir, name: str, *, device: Optional[str] = None,
                   wait: bool = True, led=None) -> Optional[str]:
    """Train (or resume) a ``train:`` teacher unless finished (one process at a time), then
    make sure its evaluation is cached; returns the teacher's path. A teacher whose run the
    ledger ``led`` carries is restored from it instead of trained (:func:`restore_teacher`).

    With ``wait=False`` a teacher that another process is training or evaluating right now is
    left to it and None is returned at once, so that parallel workers each train (or evaluate) a
    different teacher first, instead of one waiting on the other's lock.
    """
    from ...runs import run_training
    from ...checkpoint import CHECKPOINT

    spec = teacher_spec(cfg, name)
    if spec.train is not None:
        path = teacher_dir(out_dir, name)
        with grid.file_lock(Path(out_dir) / "locks" / f"teacher-{name}.lock", wait=wait) as mine:
            if not mine:
                return None
            if not grid.is_finished(path) and led is not None:
                restore_teacher(cfg, out_dir, name, led)
            if not grid.is_finished(path):
                tcfg = teacher_train_config(cfg, name)
                if tcfg.threads:
                    import torch
                    torch.set_num_threads(tcfg.threads)
                resume = (path / CHECKPOINT).is_file()
                log.info("teacher %s: %s in %s", name, "resuming" if resume else "training", path)
                run_training(tcfg, path, resume=resume, device=device)
    if teacher_eval(cfg, out_dir, name, device=device, wait=wait) is BUSY:
        return None
    return teacher_path(cfg, out_dir, name)


def attack_settings(cfg: StudyConfig):
    """``(bundle, attack)``: the base recipe's dataset and its resolved attack settings."""
    from ...runs import load_bundle, resolve_attack

    bundle = load_bundle(cfg.base)
    return bundle, resolve_attack(cfg.base, bundle)


def _eval_key(cfg: StudyConfig, rcfg: TrainConfig, path: str) -> dict:
    ev = cfg.eval
    return {"teacher": path, "eps": rcfg.eps, "alpha": rcfg.alpha, "n": ev.n,
            "pgd_steps": ev.pgd_steps, "autoattack": ev.autoattack,
            "autoattack_n": ev.autoattack_n, "autoattack_version": ev.autoattack_version,
            "autoattack_attacks": ev.autoattack_attacks}


def _current_eval(file: Path, key: dict) -> Optional[dict]:
    """The evaluation cached in ``file`` if it was made with settings ``key``, else None (an
    unreadable file counts as absent: it is rewritten when the teacher is evaluated)."""
    try:
        cached = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return cached if isinstance(cached, dict) and cached.get("settings") == key else None


def cached_teacher_eval(cfg: StudyConfig, out_dir, name: str) -> Optional[dict]:
    """The teacher's cached evaluation if it is there and current, else None (computes nothing)."""
    if not teacher_ready(cfg, out_dir, name):
        return None
    _, rcfg = attack_settings(cfg)
    return _current_eval(teacher_dir(out_dir, name) / TEACHER_EVAL,
                         _eval_key(cfg, rcfg, teacher_path(cfg, out_dir, name)))


def teacher_eval(cfg: StudyConfig, out_dir, name: str, *, device: Optional[str] = None,
                 wait: bool = True):
    """Clean / PGD (/ AutoAttack) accuracy of a ready teacher on the study's fixed test slices,
    cached in ``OUT/teachers/<name>/eval.json`` (recomputed when the settings change); None
    when the teacher is not trained yet. With ``wait=False``, :data:`BUSY` when another process
    is evaluating it right now."""
    if not teacher_ready(cfg, out_dir, name):
        return None
    from ...evaluate import evaluate
    from ...models import load_teacher

    device = device or cfg.base.device
    file = teacher_dir(out_dir, name) / TEACHER_EVAL
    with grid.file_lock(Path(out_dir) / "locks" / f"teacher-eval-{name}.lock",
                        wait=wait) as mine:
        if not mine:
            return BUSY
        bundle, rcfg = attack_settings(cfg)
        key = _eval_key(cfg, rcfg, teacher_path(cfg, out_dir, name))
        cached = _current_eval(file, key)
        if cached is not None:
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


# ----------------------------------------------------------------------------- the ledger
def _portable(record: dict) -> dict:
    """A teacher evaluation without the teacher's path (a location, not what was measured)."""
    settings = {k: v for k, v in (record.get("settings") or {}).items() if k != "teacher"}
    return {**record, "settings": settings}


def ledger_teacher_eval(cfg: StudyConfig, led, name: str) -> Optional[dict]:
    """Teacher ``name``'s evaluation as the ledger ``led`` records it (None without a ledger,
    without an entry, or when it was made with other evaluation settings); a recorded teacher
    with another recipe is refused (:meth:`~samplewise.studies.ledger.Ledger.teacher_eval`)."""
    if led is None:
        return None
    spec = teacher_spec(cfg, name)
    recorded = led.teacher_eval(name, train_cfg=teacher_train_config(cfg, name)
                                if spec.train is not None else None, path=spec.path)
    if recorded is None:
        return None
    _, rcfg = attack_settings(cfg)
    wanted = _portable({"settings": _eval_key(cfg, rcfg, "")})["settings"]
    return recorded if recorded.get("settings") == wanted else None


def merge_teacher_evals(here: dict, recorded: dict) -> dict:
    """Each teacher's evaluation: the one made here, else the ledger's. A teacher trained again
    here whose evaluation differs from the ledger's (training that did not reproduce) is logged:
    the ledger's cells learnt from the other one."""
    out = {}
    for name, te in here.items():
        rec = recorded.get(name)
        if te is not None and rec is not None and any(
                te.get(k) != rec.get(k) for k in ("clean_acc", "pgd_acc", "autoattack_acc")):
            log.warning("teacher %s trained here evaluates to clean %s / PGD %s, the ledger's to "
                        "clean %s / PGD %s: its ledger cells learnt from a teacher that did not "
                        "reproduce", name, te.get("clean_acc"), te.get("pgd_acc"),
                        rec.get("clean_acc"), rec.get("pgd_acc"))
        out[name] = te if te is not None else rec
    return out


def restore_teacher(cfg: StudyConfig, out_dir, name: str, led) -> bool:
    """Make teacher ``name``'s run directory from the run the ledger ``led`` carries (checked
    against the teacher's recipe and the files' digests), with its recorded evaluation cached
    when that was made with the study's evaluation settings; False when the ledger carries no
    run for it. The result file is written last, so a stopped restore is not a finished run."""
    recorded = ledger_teacher_eval(cfg, led, name)  # refuses a teacher of another recipe
    files = led.teacher_run(name)
    if files is None:
        return False
    path = teacher_dir(out_dir, name)
    for fname in sorted(files, key=lambda f: f == "result.json"):
        io.write_bytes(path / fname, files[fname])
    if recorded is not None:
        _, rcfg = attack_settings(cfg)
        io.write_json(path / TEACHER_EVAL, {**recorded, "settings": _eval_key(
            cfg, rcfg, teacher_path(cfg, out_dir, name))})
    log.info("teacher %s: restored from the ledger %s (not trained again)", name, led.path)
    return True


def teacher_entries(cfg: StudyConfig, out_dir, teacher_evals: dict) -> dict:
    """Ledger entries (``{name: {"recipe", "eval"}}``, plus ``"run_dir"`` for a teacher the
    study trained, so that the ledger carries its run) of the teachers trained (or given) and
    evaluated here."""
    out = {}
    for name, te in teacher_evals.items():
        spec = teacher_spec(cfg, name)
        if te is None or not teacher_ready(cfg, out_dir, name):
            continue
        if spec.train is not None:
            out[name] = {"recipe": run_recipe(teacher_dir(out_dir, name)), "eval": _portable(te),
                         "run_dir": teacher_dir(out_dir, name)}
        else:
            out[name] = {"recipe": {"path": spec.path}, "eval": _portable(te)}
    return out
