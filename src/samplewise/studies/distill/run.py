""":func:`run_distill_study`: teachers first, then the cells (or one share of them), their
transfer rates, the results and the plots."""

from __future__ import annotations

from typing import Optional

from .. import compare, grid, tables
from ..ledger import finished_entries, read_ledger
from ..ledger import record as record_ledger
from .cells import distill_cells, transfer_cells
from .config import NONE, TRANSFER_FILE, load_distill_config
from .plots import distill_plots
from .results import write_distill_results
from .teachers import (cached_teacher_eval, ensure_teacher, ledger_teacher_eval,
                       merge_teacher_evals, teacher_entries, teacher_eval, teacher_ready)


#: SAAD against every method under the same teacher, and the student trained alone
SAAD = compare.Pairing("method", "saad", ("teacher",), baseline=("teacher", NONE, ()))


def run_by_teacher(cfg, out, todo, recorded: dict, *, whole: bool,
                   device: Optional[str] = None, led=None, after_cell=None) -> dict:
    """Run the cells ``todo`` one teacher at a time (the student alone first), training each
    teacher just before its cells, so that a worker never waits for a teacher it does not yet
    need; returns id -> status.

    A teacher that another worker is training is put off until this worker has run the cells of
    every other teacher it could. A teacher with no cell left to run is trained only when
    ``whole`` (the whole study, not a share) and no ledger records its evaluation. A teacher
    whose run the ledger ``led`` carries is restored from it rather than trained.
    Without cells (the teachers' phase alone) the teachers still to train come first, so that
    the evaluation of a teacher already trained does not hold up the training of another.
    ``after_cell`` is :func:`~samplewise.studies.grid.run_cells`'s.
    """
    ran: dict = {}
    groups = {t: [c for c in todo if c.params["teacher"] == t]
              for t in [NONE, *cfg.grid["teacher"]]}
    alone = groups.pop(NONE)
    if alone:
        ran.update(grid.run_cells(alone, out, cfg.eval, device=device, after_cell=after_cell))
    wanted = [t for t, cells in groups.items() if cells or (whole and recorded[t] is None)]
    if not todo:  # the teachers' phase alone: those to train first (hours), then the evaluations
        wanted.sort(key=lambda t: teacher_ready(cfg, out, t))
    busy = []
    for name in wanted:
        if ensure_teacher(cfg, out, name, device=device, wait=False, led=led) is None:
            busy.append(name)  # another worker is training it: its cells come last
        elif groups[name]:
            ran.update(grid.run_cells(groups[name], out, cfg.eval, device=device,
                                      after_cell=after_cell))
    for name in busy:
        ensure_teacher(cfg, out, name, device=device, led=led)
        if groups[name]:
            ran.update(grid.run_cells(groups[name], out, cfg.eval, device=device,
                                      after_cell=after_cell))
    return ran


def run_distill_study(config, out_dir, cells=None, *, device: Optional[str] = None,
                      report_only: bool = False, ledger=None, teachers_only: bool = False
                      ) -> dict:
    """Run (or continue) a distillation study and write its results and plots.

    Args:
        config: a YAML path, a mapping or a parsed :class:`StudyConfig`.
        out_dir: the study directory (``teachers/``, ``cells/``, results, plots).
        cells: ``"i/n"`` to run only the i-th of n shares of the cells. Without it, every
            unfinished cell runs (and every teacher is trained). Either way the cells run one
            teacher at a time, each teacher trained (one process per teacher, under a lock) just
            before its cells (:func:`run_by_teacher`).
        device: overrides the config's device.
        report_only: train and evaluate nothing; write the results and plots of the cells
            finished so far (the progress of a study whose shares are still running).
        ledger: a ledger file (:mod:`samplewise.studies.ledger`): the cells it holds count as
            finished and its teachers' evaluations stand in for teachers not trained here (each
            checked against this config); a teacher is trained only for cells still to run.
            The cells and teachers finished here are added to it, with the run of every
            teacher trained here, so that a later machine restores it instead of training it.
        teachers_only: train (or restore) and evaluate the teachers the ledger does not record
            yet, and run no cell: the first phase of a study split over jobs or machines.

    Returns:
        ``cells_total``, ``cells_finished``, ``missing``, ``ran`` (id -> status), ``failed``,
        ``teachers`` (name -> cached evaluation or None), ``results`` and ``plots``.
    """
    cfg = load_distill_config(config)
    share = grid.parse_share(cells)
    out = grid.study_dir(out_dir, existing=report_only and ledger is None)
    all_cells = distill_cells(cfg, out)
    led = read_ledger(ledger, cfg.study, cfg.eval) if ledger is not None else None
    imported = led.rows_for(all_cells) if led is not None else {}
    recorded = {name: ledger_teacher_eval(cfg, led, name) for name in cfg.grid["teacher"]}
    todo = [] if teachers_only else grid.share_of(all_cells, share, imported)
    for cell in todo:  # a changed config is one clear error before anything runs
        grid.check_same_settings(cell, grid.cell_dir(out, cell))

    def publish(teacher_evals: dict, draw: bool) -> tuple:
        """Write the results (and with ``draw`` the plots and the comparison) of every cell
        finished so far and record them in the ledger; returns ``(record, teacher evals,
        written files, plots)``."""
        teacher_evals = merge_teacher_evals(teacher_evals, recorded)
        with grid.file_lock(out / "locks" / "results.lock", wait=True):  # the last writer sees all
            record = write_distill_results(cfg, all_cells, out, teacher_evals, imported)
            if led is not None:
                record_ledger(ledger, cfg.study, cfg.eval, finished_entries(
                    all_cells, out, cfg.eval, record["rows"], skip=imported,
                    complete=lambda c, p: c.cfg.teacher is None or (p / TRANSFER_FILE).is_file()),
                    teacher_entries(cfg, out, teacher_evals), lock=out / "locks" / "ledger.lock")
            if not draw:
                return record, teacher_evals, [], []
            plots = distill_plots(record["summary"], out, cfg.eval) if record["rows"] else []
            results = [out / name for name in tables.RESULTS]
            written = compare.write_comparison(record["summary"], out, cfg.eval, SAAD,
                                               pgd_label=f"PGD-{cfg.eval.pgd_steps}")
        return record, teacher_evals, results + ([written] if written is not None else []), plots

    def after_cell(cell) -> None:
        """The held-out TAS of this cell (and of any finished one still lacking it: a worker
        killed before its own), then the results and the ledger."""
        transfer_cells(cfg, all_cells, out, device=device)
        publish({name: cached_teacher_eval(cfg, out, name) for name in cfg.grid["teacher"]},
                draw=False)

    if report_only:
        ran: dict = {}
        teacher_evals = {name: cached_teacher_eval(cfg, out, name) for name in cfg.grid["teacher"]}
    else:
        ran = run_by_teacher(cfg, out, todo, recorded, whole=teachers_only or not share,
                             device=device, led=led, after_cell=after_cell)
        if share is None and not teachers_only:
            ran.update({c.id: grid.LEDGER_STATUS for c in all_cells if c.id in imported})
        transfer_cells(cfg, todo, out, device=device)
        teacher_evals = {name: teacher_eval(cfg, out, name, device=device)
                         for name in cfg.grid["teacher"]}
    record, teacher_evals, results, plots = publish(teacher_evals, draw=True)
    return {"cells_total": record["cells_total"], "cells_finished": record["cells_finished"],
            "missing": record["missing"], "ran": ran,
            "failed": sorted(k for k, v in ran.items() if v.startswith("failed")),
            "teachers": teacher_evals,
            "results": [str(p) for p in results],
            "plots": [str(p) for p in plots]}
