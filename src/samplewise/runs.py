"""From a config to a finished run directory: the pipeline behind ``samplewise train`` and
``samplewise distill``.

A run directory holds ``config.yaml`` (resolved settings, seed, version, git hash, dataset
fingerprint), ``checkpoint.pt`` (after every epoch, and mid-epoch when a signal stops the run),
``metrics.jsonl``, ``model.pt`` and ``result.json``. All files are written atomically, by one
process at a time: :func:`holds_out_dir` (``.lock``, :mod:`samplewise.runlock`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import distributed, io, runlock
from .checkpoint import CHECKPOINT
from .config import TrainConfig, check_same_run, dump_yaml, read_yaml, to_dict
from .data import DataBundle, load_dataset
from .errors import SamplewiseError
from .evaluate import evaluate
from .formats.subset import checksum, read_subset, write_subset
from .models import create_model, load_teacher, save_model
from .models.layout import choose_layout, run_in_nhwc
from .objectives import build_objective, resolve_recipe
from .runinfo import provenance, seed_everything
from .hooks import Hook
from .threat import ThreatModel
from .train import FitResult, fit
from .transfer import TransferHistory

log = logging.getLogger(__name__)

#: the fixed seed of ``train_size`` sampling: every run and score file sees the same samples
TRAIN_SIZE_SEED = 0


def load_bundle(cfg: TrainConfig) -> DataBundle:
    return load_dataset(cfg.dataset, root=cfg.data_root, download=cfg.download,
                        train_size=cfg.train_size, seed=TRAIN_SIZE_SEED)


def prepare_out_dir(out_dir, resume: bool, overwrite: bool = False) -> Path:
    """Refuse to overwrite a finished or started run unless asked to."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SamplewiseError(f"--out {out} exists and is not a directory")
    if resume and not out.is_dir():
        raise SamplewiseError(f"nothing to resume: {out / CHECKPOINT} does not exist")
    started = (out / CHECKPOINT).exists() or (out / "result.json").exists()
    if started and not resume and not overwrite:
        raise SamplewiseError(f"{out} already holds a run; pass --resume to continue it or "
                              "--overwrite to start again")
    return out


def holds_out_dir(fn):
    """Run ``fn(cfg, out_dir, ..., resume=..., overwrite=...)`` holding the lock of ``out_dir``
    (:func:`samplewise.runlock.hold`; another holder is one error naming it). The checks that
    need no lock come first, so that a refused call creates nothing; under ``torchrun`` only
    rank 0, which writes, takes the lock."""

    @functools.wraps(fn)
    def wrapper(cfg, out_dir, *args, **kwargs):
        out = Path(out_dir)
        if not out.is_dir():  # a file, or nothing to resume: refused before anything is made
            prepare_out_dir(out, kwargs.get("resume", False), kwargs.get("overwrite", False))
        if distributed.launched_rank() != 0:
            return fn(cfg, out_dir, *args, **kwargs)
        with runlock.hold(out):
            return fn(cfg, out_dir, *args, **kwargs)

    return wrapper


def resolve_attack(cfg: TrainConfig, bundle: DataBundle) -> TrainConfig:
    """Fill ε and the step from the dataset card (:meth:`ThreatModel.resolve`, rule
    ``"default-eps"``: the card's step only when ε is the card's default, else ε/4)."""
    threat = ThreatModel.resolve(bundle.card, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.attack_steps,
                                 card_step="default-eps")
    return dataclasses.replace(cfg, eps=threat.eps, alpha=threat.alpha)


@holds_out_dir
def run_training(cfg: TrainConfig, out_dir, *, resume: bool = False, overwrite: bool = False,
                 hooks: Sequence[Hook] = (), device: str | None = None, subset=None,
                 bundle: DataBundle | None = None) -> dict:
    """Train (or distil) as ``cfg`` says and write the run directory; returns ``result.json``.

    Keys ``cfg`` leaves unset take the objective's recipe defaults (:func:`resolve_recipe`), as
    on the command line; ``config.yaml`` records the resolved values.

    Args:
        subset: dataset indices to train on (e.g. from :func:`samplewise.select`), instead of
            ``cfg.subset`` (a file). They are written to ``out_dir/subset.npy`` with a checksum
            and the dataset fingerprint beside it (:data:`RUN_SUBSET`), and the run then trains
            exactly as with ``cfg.subset`` naming that file; a resumed run must pass the same
            indices.
        bundle: ``cfg``'s dataset as :func:`load_bundle` loads it, for a caller that needs it
            too (:func:`samplewise.hardness.scoring.score`); None: loaded here.

    Example:
        >>> run_training(TrainConfig(dataset="digits", model="cnn-small", epochs=3), "runs/demo")
        >>> run_training(cfg, "runs/ec50", subset=select(table, "easycore", 0.5))
    """
    out = prepare_out_dir(out_dir, resume, overwrite)
    if resume and (out / "result.json").exists() and (out / "model.pt").exists():
        check_resumable(out, cfg)
        log.info("%s is already finished", out)
        try:
            return json.loads((out / "result.json").read_text())
        except (ValueError, UnicodeDecodeError):
            raise SamplewiseError(f"{out / 'result.json'}: not valid JSON (damaged); pass "
                                  "--overwrite to run again") from None
    if resume and not (out / CHECKPOINT).exists():
        # killed before its first checkpoint: nothing to continue, so start from epoch 0
        log.info("%s has no checkpoint yet; starting from the first epoch", out)
        resume = False
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = distributed.setup(device or cfg.device)
    device = env.device
    bundle = load_bundle(cfg) if bundle is None else bundle
    cfg = resolve_attack(cfg, bundle)
    given = subset is not None
    if given:
        cfg, subset = given_subset(cfg, out, subset, bundle, resume)
    else:
        subset = read_subset(cfg.subset, bundle).indices if cfg.subset else None
    subset_checksum = checksum(subset) if subset is not None else None
    cfg = resolve_recipe(cfg)
    n_train = len(subset) if subset is not None else len(bundle.train)
    epochs = cfg.epochs
    if cfg.budget == "iterations" and subset is not None:
        epochs = math.ceil(cfg.epochs * len(bundle.train) / n_train)
    run_cfg = dataclasses.replace(cfg, epochs=epochs)
    seed_everything(cfg.seed)
    model = create_model(cfg.model, bundle.card, **cfg.model_args)
    teacher = load_teacher(cfg.teacher, card=bundle.card, device=device) if cfg.teacher else None
    objective = build_objective(cfg.objective, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.attack_steps,
                                teacher=teacher, **cfg.objective_args)
    resolved = {**to_dict(cfg), "epochs_run": epochs, "n_train": n_train,
                "fingerprint": bundle.fingerprint, "objective_settings": objective.settings(),
                "world_size": env.world_size, **provenance()}
    if subset_checksum is not None:
        resolved["subset_checksum"] = subset_checksum
    if resume:
        check_resumable(out, resolved)
    board = _tensorboard(cfg, out, resume, env.is_main)
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)  # only once every input has been validated
        if given:
            write_subset(cfg.subset, subset, {"dataset": bundle.card.name, "source": "run_training",
                                              "fingerprint": bundle.fingerprint})
        io.write_text(out / "config.yaml", dump_yaml(resolved))
    model.to(device)
    nhwc = run_in_nhwc(cfg.channels_last, model, device, ddp=env.enabled)
    choose_layout(model, nhwc)  # before DDP
    ddp = _ddp(model, env)
    history = TransferHistory() if teacher is not None else None
    hooks = [*hooks, history] if history is not None else list(hooks)
    hooks += [board] if board is not None else []
    t0 = time.perf_counter()
    try:
        res: FitResult = fit(model, bundle, objective, run_cfg, out_dir=out, hooks=hooks,
                             subset=subset, device=device, resume=resume, rank=env.rank,
                             world_size=env.world_size, ddp_model=ddp)
    finally:
        if board is not None:
            board.close()
    train_seconds = time.perf_counter() - t0
    if not env.is_main:
        distributed.barrier()  # rank 0 evaluates and writes; the others wait for it
        return {}
    result = final_evaluation(res.model, bundle, cfg, device)
    result.update({"dataset": cfg.dataset, "model": cfg.model, "objective": cfg.objective,
                   "seed": cfg.seed, "n_train": n_train, "epochs": epochs, "budget": cfg.budget,
                   "train_seconds": round(train_seconds, 2),
                   "epoch_seconds": [m["seconds"] for m in res.metrics]})
    if history is not None:  # per-sample transfer flags of every epoch, by dataset index
        result["tas_per_epoch"] = [m.get("tas") for m in res.metrics]
        io.np_savez(out / "transfer.npz", index=history.index.numpy(), transfer=history.matrix())
    save_model(out / "model.pt", res.model, extra={"result": json.loads(json.dumps(result))})
    io.write_json(out / "result.json", result)
    if env.enabled:
        distributed.barrier()
    return result


RUN_SUBSET = "subset.npy"


def given_subset(cfg: TrainConfig, out: Path, indices, bundle: DataBundle, resume: bool
                 ) -> tuple[TrainConfig, np.ndarray]:
    """Check the indices handed to :func:`run_training` and return ``(cfg, sorted indices)``,
    ``cfg.subset`` naming ``out/subset.npy``, where the run writes them with its config.

    A file subset is read back sorted (:func:`samplewise.formats.subset.write_subset`), so sorting
    here makes the run identical to one trained from a file of the same indices. A resumed run
    must pass the indices it was started with (compared by checksum).
    """
    if cfg.subset:
        raise SamplewiseError("pass the subset either as indices (subset=) or as a file "
                              f"(cfg.subset={cfg.subset!r}), not both")
    arr = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise SamplewiseError(f"subset must be a non-empty 1-D array of integer dataset indices, "
                              f"got shape {arr.shape}, dtype {arr.dtype}")
    arr = np.sort(arr.astype(np.int64))
    bundle.train.subset(arr)  # validates: unique, non-negative, in the training split
    path = out / RUN_SUBSET
    if resume and path.exists() and checksum(read_subset(path).indices) != checksum(arr):
        raise SamplewiseError(f"{out} was started on other subset indices ({path}); pass the "
                              "same indices to resume, or overwrite to start again")
    return dataclasses.replace(cfg, subset=str(path)), arr


def _tensorboard(cfg: TrainConfig, out: Path, resume: bool, main: bool):
    """The TensorBoard hook of a ``tensorboard: true`` run (rank 0 only), or None."""
    if not cfg.tensorboard:
        return None
    from .tensorboard_log import TB_DIR, TensorBoardHook
    hook = TensorBoardHook(out / TB_DIR, resume=resume)  # raises here if tensorboard is missing
    return hook if main else None


def check_resumable(out: Path, cfg) -> None:
    """Refuse, before anything is written, to resume ``out`` with another recipe than its
    ``config.yaml`` records (:func:`samplewise.config.check_same_run`; runtime keys may differ).
    ``cfg``: a :class:`TrainConfig` or the resolved mapping :func:`run_training` writes."""
    saved = out / "config.yaml"
    if saved.is_file():
        check_same_run(read_yaml(saved), cfg, where=str(out))


def _ddp(model, env):
    """DistributedDataParallel wrapper for multi-process runs (None for one process)."""
    if not env.enabled:
        return None
    from torch.nn.parallel import DistributedDataParallel
    ids = [env.local_rank] if env.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)


def final_evaluation(model, bundle: DataBundle, cfg: TrainConfig, device) -> dict:
    """Clean and PGD-``eval_steps`` accuracy at the run's ε on the fixed test slice."""
    res = evaluate(model, bundle.test, attack="pgd", eps=cfg.eps, alpha=cfg.alpha,
                   steps=cfg.eval_steps, n=cfg.eval_n, seed=0, device=device)
    return {"clean_acc": res["clean_acc"], "robust_acc": res["robust_acc"],
            "eval": {k: res[k] for k in ("attack", "eps", "alpha", "steps", "n", "seed")}}
