"""The run checkpoint (``checkpoint.pt``): one writer, one reader, the restore of a resume.

A checkpoint is a plain dict written atomically by :func:`write_checkpoint` (loadable with
``weights_only=True``)::

    {"format": "samplewise.checkpoint/1", "epoch": finished epochs,
     "model": models.model_payload(model), "optimizer": ..., "scheduler": ...,
     "objective": objective.state_dict(), "hooks": hook_states(hooks), "rng": runinfo.rng_state(),
     "swa": the weight average's state or None, "partial": the loop's place in the next epoch
     (a preempted run) or None}

:func:`read_checkpoint` loads and checks one; :func:`restore_checkpoint` puts it back into the
objects of a run, and trims ``metrics.jsonl`` to its epochs (:func:`trim_metrics`). The training
loop (:func:`samplewise.train.fit`) decides when to write and what a ``partial`` holds; this
module knows the file. It sits with the models (layer 2): a checkpoint nests a model file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from . import io
from .errors import SamplewiseError
from .models import model_payload
from .runinfo import rng_state, set_rng_state

CHECKPOINT = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
FORMAT = "samplewise.checkpoint/1"


def write_checkpoint(out_dir: Path, model, optimizer, scheduler, objective, hooks: Sequence[Any],
                     swa, epoch: int, partial: dict | None = None) -> Path:
    """Write ``out_dir/checkpoint.pt`` atomically; returns its path.

    ``epoch``: finished epochs; ``partial``: the loop's place and sums within the next one (a
    preempted run), else None. ``hooks`` and ``swa`` (None: no weight average) are anything
    with ``state_dict``; the global RNG states are taken now.
    """
    state = {"format": FORMAT, "epoch": epoch, "model": model_payload(model),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "objective": objective.state_dict(), "hooks": hook_states(hooks),
             "rng": rng_state(), "swa": swa.state_dict() if swa is not None else None,
             "partial": partial}
    path = Path(out_dir) / CHECKPOINT
    io.torch_save(state, path)
    return path


def read_checkpoint(path) -> dict:
    """The checkpoint dict at ``path``; a file that is not one is a :class:`SamplewiseError`."""
    state = io.torch_load(path, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SamplewiseError(f"{path}: not a samplewise checkpoint")
    return state


def restore_checkpoint(out_dir, model, optimizer, scheduler, objective, hooks: Sequence[Any], swa,
                       *, write: bool = True, steps: int | None = None
                       ) -> tuple[int, list[dict], dict | None]:
    """Load ``out_dir/checkpoint.pt`` into the run's objects and set the global RNG states.

    Returns ``(finished epochs, metrics lines kept, partial or None)``. ``steps``: this run's
    steps per epoch, which a mid-epoch checkpoint must match. ``write``: rewrite
    ``metrics.jsonl`` without the lines of epochs the checkpoint does not hold (one process of
    a distributed run writes).
    """
    if out_dir is None:
        raise SamplewiseError("--resume needs an output directory")
    path = Path(out_dir) / CHECKPOINT
    if not path.exists():
        raise SamplewiseError(f"nothing to resume: {path} does not exist")
    state = read_checkpoint(path)
    try:
        model.load_state_dict(state["model"]["state_dict"])
    except RuntimeError:
        raise SamplewiseError(f"{path}: the checkpoint holds a different architecture "
                              f"({state['model'].get('arch')}) than this run") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    objective.load_state_dict(state["objective"])
    load_hook_states(hooks, state["hooks"], path)
    if swa is not None and state.get("swa") is not None:
        swa.load_state_dict(state["swa"])
    set_rng_state(state["rng"])
    epoch = int(state["epoch"])
    partial = state.get("partial")
    if partial is not None and steps is not None and partial["steps"] != steps:
        raise SamplewiseError(f"{path} stopped at step {partial['step']} of an epoch of "
                              f"{partial['steps']} steps, but this run has {steps} steps per "
                              "epoch; resume with the run's own settings")
    return epoch, trim_metrics(out_dir, epoch, write=write), partial


def trim_metrics(out_dir, epoch: int, *, write: bool = True) -> list[dict]:
    """The lines of ``out_dir/metrics.jsonl`` up to ``epoch``; with ``write``, the file is
    rewritten to hold only those (a line whose epoch's checkpoint never landed is dropped)."""
    path = Path(out_dir) / METRICS_FILE
    metrics = [m for m in io.read_jsonl(path) if m.get("epoch", 0) <= epoch]
    if write:
        io.write_text(path, "".join(json.dumps(m) + "\n" for m in metrics))
    return metrics


def hook_states(hooks: Sequence[Any]) -> list[dict]:
    """The state of every stateful hook, tagged with its class (stateless hooks are skipped)."""
    return [{"hook": type(h).__name__, "state": st} for h in hooks if (st := h.state_dict())]


def load_hook_states(hooks: Sequence[Any], saved: list[dict], path) -> None:
    """Give each saved state to the next hook of the same class; a state no hook takes means the
    run is not the one that was checkpointed, which we refuse rather than silently drop."""
    queues: dict[str, list] = {}
    for item in saved:
        queues.setdefault(item["hook"], []).append(item["state"])
    for h in hooks:
        queue = queues.get(type(h).__name__)
        if queue:
            h.load_state_dict(queue.pop(0))
    left = sorted(name for name, q in queues.items() if q)
    if left:
        raise SamplewiseError(f"{path}: the checkpoint holds the state of {', '.join(left)}, "
                              "which this run does not use; resume with the same settings")
