"""Scoring runs: one standard training with hardness trackers → ``scores.npz`` (methods.md §3).

:func:`score` trains a scoring model with the standard objective on the full training set (or a
``train_size`` sample) through :func:`samplewise.runs.run_training`, so the run directory gets
``config.yaml``, ``metrics.jsonl``, ``checkpoint.pt`` (with the trackers' state, for resume),
``model.pt`` and ``result.json`` like any run, plus ``scores.npz``: a
:class:`~samplewise.formats.scores.ScoreTable` with ``aign``, ``el2n``, ``grand``,
``forgetting``, ``aum`` and ``loss`` (higher = harder), the N x E per-epoch AIGN matrix, in
checkpoint mode the N x E per-epoch true-class probabilities of the same passes (a data map's
confidence), and the final model's penultimate features.

Example:
    >>> from samplewise.config import TrainConfig
    >>> table = score(TrainConfig(dataset="digits", model="cnn-small", epochs=10), "runs/scores")
    >>> table.get("aign")[:3], table.aign_per_epoch.shape
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..checkpoint import CHECKPOINT, load_hook_states, read_checkpoint
from ..config import TrainConfig, to_dict, validate_train
from ..data import DataBundle
from ..errors import SamplewiseError
from ..models import load_model
from ..objectives import resolve_recipe
from ..runinfo import __version__
from ..runs import holds_out_dir, load_bundle, prepare_out_dir, run_training
from ..hooks import Hook
from ..formats.scores import FORMAT, SCORE_NAMES, ScoreTable
from .trackers import (EvalPassTracker, OnlineAIGNTracker, PNorm, TrainingDynamicsTracker,
                       norm_kind, per_sample_pass)

log = logging.getLogger(__name__)

SCORES_FILE = "scores.npz"
MODES = ("checkpoint", "online")
#: the score file's own settings, compared with the recipe when a resumed run finds one
SCORING_KEYS = ("mode", "p", "track_every")


def make_trackers(mode: str = "checkpoint", *, p: PNorm = 2, track_every: int = 1,
                  early_epochs: int | None = None, batch_size: int = 512) -> list[Hook]:
    """The hooks of a scoring run: an AIGN tracker, the EL2N/GraNd pass, training dynamics.

    ``"checkpoint"``: one :class:`EvalPassTracker` gives AIGN, EL2N and GraNd. ``"online"``:
    :class:`OnlineAIGNTracker` gives AIGN; a forward-only :class:`EvalPassTracker` still gives
    EL2N and GraNd over the early epochs (no input gradients, nothing after the early window).

    Example:
        >>> [type(h).__name__ for h in make_trackers("online")]
        ['OnlineAIGNTracker', 'EvalPassTracker', 'TrainingDynamicsTracker']
    """
    if mode not in MODES:
        raise SamplewiseError(f"unknown scoring mode '{mode}'; choose from: {', '.join(MODES)}")
    passes = EvalPassTracker(p=p, track_every=track_every, early_epochs=early_epochs,
                             batch_size=batch_size, aign=mode == "checkpoint")
    first = [passes] if mode == "checkpoint" else [OnlineAIGNTracker(p=p, track_every=track_every),
                                                  passes]
    return [*first, TrainingDynamicsTracker()]


def scoring_config(cfg: TrainConfig) -> TrainConfig:
    """Check that ``cfg`` describes a scoring run (standard training on the training set) and
    resolve its recipe defaults, so that the score file's ``config`` holds the values trained."""
    validate_train(cfg)
    if cfg.objective != "standard":
        raise SamplewiseError(f"scoring runs use standard training (methods.md §3); got objective "
                              f"'{cfg.objective}' (drop it or set objective=standard)")
    if cfg.teacher or cfg.subset:
        raise SamplewiseError("scoring runs train on the full training set (or a train_size "
                              "sample), without a teacher or a subset")
    return resolve_recipe(cfg)


@holds_out_dir
def score(cfg: TrainConfig, out_dir: str | Path, *, mode: str = "checkpoint", p: PNorm = 2,
          track_every: int = 1, early_epochs: int | None = None, window: tuple | None = None,
          batch_size: int = 512, resume: bool = False, overwrite: bool = False,
          device: str | None = None, hooks: Sequence[Hook] = ()) -> ScoreTable | None:
    """Run a scoring training and write ``out_dir/scores.npz``; return its table.

    Under ``torchrun`` every rank trains on its shard, the trackers merge per-sample values by
    dataset index, and rank 0 writes the file (the other ranks return ``None``).

    Args:
        cfg: the training settings; the objective must be ``standard``.
        out_dir: run directory (refused if it already holds a run, unless ``resume``/``overwrite``).
        mode: ``"checkpoint"`` (eval-mode pass on clean inputs after tracked epochs, default) or
            ``"online"`` (the training minibatches' own input gradients; augmented, train mode).
        p: input-gradient norm: ``2``, ``1`` or ``"sq"`` (squared L2).
        track_every: track every k-th epoch.
        early_epochs: tracked epochs averaged into EL2N/GraNd (default: first 10%, at least 1).
        window: ``(start, stop)`` epoch labels (0-based) of the AIGN average; default all.
        batch_size: batch size of the scoring passes.
        resume: continue a killed run; a finished run's scores are loaded (or rebuilt from
            ``checkpoint.pt`` if ``scores.npz`` is missing).
        overwrite: start again in a used directory.
        device: default ``cfg.device``.
        hooks: extra hooks, run after the trackers.

    Example:
        >>> t = score(TrainConfig(dataset="digits", epochs=5), "runs/s", mode="online", p="sq")
        >>> t.summary()["aign"]["mean"]
    """
    p = norm_kind(p)
    trackers = make_trackers(mode, p=p, track_every=track_every, early_epochs=early_epochs,
                             batch_size=batch_size)
    cfg = scoring_config(cfg)
    recipe = to_dict(cfg)
    out = prepare_out_dir(out_dir, resume, overwrite)
    path = out / SCORES_FILE
    settings = {"dataset": cfg.dataset, "model": cfg.model, "epochs": cfg.epochs, "seed": cfg.seed,
                "train_size": cfg.train_size, "mode": mode, "p": p, "track_every": track_every}
    if resume and path.exists():  # this very run's file (its recipe and SCORING_KEYS), else refused
        table = ScoreTable.load_same_run(path, {**recipe, **settings}, extra=SCORING_KEYS)
        log.info("%s is already scored", path)
        return table
    path.unlink(missing_ok=True)  # a stale file must never pass for this run's scores
    device = device or cfg.device
    finished = resume and (out / "result.json").exists() and (out / "model.pt").exists()
    bundle = load_bundle(cfg)  # loaded once, for the training and the table
    # a finished run is checked against this recipe and returned as it is (no training)
    run_training(cfg, out, resume=resume, overwrite=overwrite, hooks=[*trackers, *hooks],
                 device=device, bundle=bundle)
    if finished:
        _restore_trackers(out, trackers, cfg.epochs)
    elif not distributed.current().is_main:
        return None  # every rank holds the merged tracker state; rank 0 writes the file
    meta = {**settings, "fingerprint": bundle.fingerprint, "num_train": bundle.index_size,
            "model_args": dict(cfg.model_args), "window": None if window is None else list(window),
            "forgetting_never_learned": "number of presentations", "config": recipe}
    table = build_table(trackers, load_model(out, device=device), bundle, meta=meta,
                        window=window, batch_size=batch_size)
    table.save(path)
    return table


def build_table(trackers: Sequence[Hook], model: nn.Module, bundle: DataBundle, *, meta: dict,
                window: tuple | None = None, batch_size: int = 512) -> ScoreTable:
    """Assemble the score table from finished trackers (see :func:`make_trackers`) and the
    final model (its penultimate features on the clean training inputs)."""
    aign_t = trackers[0]
    passes = next(t for t in trackers if isinstance(t, EvalPassTracker))
    dynamics = next(t for t in trackers if isinstance(t, TrainingDynamicsTracker))
    for t in (passes, dynamics):
        if not torch.equal(t.index, aign_t.index):
            raise SamplewiseError("the trackers of this run tracked different samples")
    found = {**passes.scores(window), **aign_t.scores(window), **dynamics.scores()}
    rows = aign_t.rows(bundle.train.index)
    labels = torch.empty(len(rows), dtype=torch.int64)
    labels[rows] = bundle.train.y
    feats = per_sample_pass(model, bundle.train, input_grad=False, features=True,
                            batch_size=batch_size)
    features = torch.empty(len(rows), feats["features"].shape[1])
    features[aign_t.rows(feats["index"])] = feats["features"]
    meta = {**meta, "format": FORMAT, "tracked_epochs": list(aign_t.tracked),
            "early_epochs": passes.early_epochs_used(), "samplewise_version": __version__}
    return ScoreTable(index=aign_t.index.numpy(), labels=labels.numpy(),
                      scores={k: found[k] for k in SCORE_NAMES},
                      aign_per_epoch=aign_t.aign_matrix(),
                      prob_per_epoch=passes.prob_matrix(),
                      features=features.numpy().astype(np.float16), meta=meta)


def scores_from_model(model: nn.Module, bundle: DataBundle, p: PNorm = 2, *,
                      batch_size: int = 512, device: str | None = None) -> ScoreTable:
    """Per-sample scores of a FIXED model on the clean training inputs (one tracked point).

    ``aign`` is one AIGN column (eval mode, gradient of the per-sample loss); ``el2n``, ``grand``
    and ``loss`` are the same pass's softmax error, last-layer gradient norm and CE; ``features``
    are the penultimate features. Used to compare the online and checkpoint modes and to relate a
    trained model's input gradients to its per-sample vulnerability.

    Example:
        >>> t = scores_from_model(load_model("runs/s"), load_dataset("digits"), p=2)
        >>> t.get("aign").shape
        (1347,)
    """
    out = per_sample_pass(model, bundle.train, p=p, batch_size=batch_size, device=device,
                          features=True)
    order = torch.argsort(out["index"])
    y = bundle.train.y.cpu()[torch.argsort(bundle.train.index.cpu())]
    meta = {"format": FORMAT, "dataset": bundle.card.name, "fingerprint": bundle.fingerprint,
            "num_train": bundle.index_size, "model": getattr(model, "arch", type(model).__name__),
            "mode": "fixed", "p": norm_kind(p), "samplewise_version": __version__}
    return ScoreTable(index=out["index"][order].numpy(), labels=y.numpy(),
                      scores={k: out[k][order].numpy() for k in ("aign", "el2n", "grand", "loss")},
                      features=out["features"][order].numpy().astype(np.float16), meta=meta)


def _restore_trackers(out: Path, trackers: Sequence[Hook], epochs: int) -> None:
    """Rebuild a finished run's trackers from its last checkpoint (scores.npz went missing)."""
    state = read_checkpoint(out / CHECKPOINT)
    if len(state.get("hooks") or []) < len(trackers):
        raise SamplewiseError(f"{out / CHECKPOINT}: holds no tracker state of a scoring run")
    if int(state.get("epoch", -1)) != epochs:
        raise SamplewiseError(f"{out / CHECKPOINT} is from epoch {state.get('epoch')}, but the "
                              f"finished run should have {epochs}; pass --overwrite")
    load_hook_states(trackers, state["hooks"], out / CHECKPOINT)
    log.info("rebuilt the scores of %s from %s", out, CHECKPOINT)
