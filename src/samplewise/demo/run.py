"""The demo's runner: :func:`run_demo` runs (or resumes) every stage under one progress bar, after
checking the dataset and the settings of a used output directory."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Optional

from .. import runlock
from ..errors import SamplewiseError
from .report import _json_text, _write_if_changed, write_outputs
from .results import assemble
from .settings import FORMAT, RESULTS_FILE, SETTINGS_FILE, STAGE_FILE, DemoSettings, demo_settings
from .stages import (Stage, _EpochTicks, _finished, _make_atlas, _make_subsets, _run_scoring,
                     _stage_record, _started, plan)

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
    _check_dataset(s, data_root)
    with runlock.hold(out):  # one demo per directory; each stage also locks its own run dir
        return _run_stages(s, out, resume=resume, device=device, data_root=data_root,
                           progress=progress, verbose=verbose)


def _run_stages(s: DemoSettings, out: Path, *, resume: bool, device: Optional[str],
                data_root: Optional[str], progress: bool, verbose: bool) -> dict:
    _check_settings(out, s, resume)
    stages = plan(s, out.resolve(), data_root=data_root, device=device)
    _write_if_changed(out / SETTINGS_FILE, _json_text({"format": FORMAT, "settings": s.to_dict()}))

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
            seconds = time.perf_counter() - t0
            records[st.name] = _stage_record(st, run_dir, seconds)
            r = records[st.name]
            log.info("stage %d/%d %s: clean %.1f%%, PGD-%d %.1f%%%s (%.0f s)", i, len(stages),
                     st.name, 100 * r["clean_acc"], s.eval_steps, 100 * r["robust_acc"],
                     f", TAS {r['tas']:.3f}" if r.get("tas") is not None else "", r["seconds"])
    results = {**assemble(s, stages, records, table, out), "atlas": atlas}
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
    from ..data import load_dataset
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
