"""The distillation study's results: one row per finished cell, results.csv / .md / .json with
the teachers' evaluations and the TAS columns."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence

from ... import io
from .. import tables
from ..grid import Cell, EvalSpec, StudyConfig
from .cells import training_tas
from .config import DISTILL_COLUMNS, NONE, TITLE, TRANSFER_FILE, TRANSFER_STEPS
from .teachers import attack_settings, teacher_path


def distill_rows(cfg: StudyConfig, cells: Sequence[Cell], out_dir, teacher_evals: dict,
                 imported: Optional[dict] = None) -> tuple[list[dict], list[str]]:
    """Rows of the finished cells (grouped by teacher, then method and seed) and the ids of the
    missing ones; a cell in ``imported`` (id -> row, from a ledger) takes that row."""
    order = {t: i for i, t in enumerate(cfg.grid["teacher"])}  # the config's teacher order

    def key(c: Cell):  # grouped by teacher (the student alone first), then method and seed
        return order.get(c.params["teacher"], -1), c.params["method"], c.params["seed"]

    def row_of(cell: Cell, path) -> Optional[dict]:
        row = tables.cell_row(cell, path, cfg.eval)
        if row is None:
            return None
        te = teacher_evals.get(cell.params["teacher"]) or {}
        tr = json.loads((path / TRANSFER_FILE).read_text()) \
            if (path / TRANSFER_FILE).is_file() else {}
        row.update({"teacher_clean": te.get("clean_acc"), "teacher_pgd": te.get("pgd_acc"),
                    "teacher_aa": te.get("autoattack_acc"),
                    "tas_train": training_tas(path) if cell.cfg.teacher else None,
                    "tas_test": tr.get("tas"),
                    "tas_test_given_fooled": tr.get("tas_given_student_fooled"),
                    "epoch_seconds": row["seconds"] / row["epochs"] if row.get("epochs") else None})
        return row

    return tables.collect(cells, out_dir, cfg.eval, imported, row_of=row_of, order=key)


def _num(v, pct=True) -> str:
    if pct or v is None:
        return tables.pct(v)
    return f"{v:.3f}"


def _mean_pm(mean, std, n, pct=True) -> str:
    if mean is None:
        return "–"
    if pct:
        return tables.pct_cell(mean, std, n)
    return f"{mean:.3f}" + (f" ± {std:.3f}" if n > 1 else "")


#: the methods SAAD's epoch time is compared with: its official base and a common baseline
COST_BASES = ("igdm", "rslad")


def cost_ratios(summary: Sequence[dict]) -> list[tuple[str, str, float]]:
    """``(teacher, base, saad seconds per epoch / base's)`` for every teacher with both means
    (issue 12 §5: SAAD's cost against IGDM, its official base, and against RSLAD)."""
    per = {(s["teacher"], s["method"]): s.get("epoch_seconds_mean") for s in summary}
    out = []
    for (teacher, method), saad in per.items():
        if method != "saad" or not saad:
            continue
        for base in COST_BASES:
            other = per.get((teacher, base))
            if other:
                out.append((teacher, base, saad / other))
    return out


def distill_markdown(summary: Sequence[dict], ev: EvalSpec, eps, missing) -> str:
    aa = ev.autoattack
    which = "" if ev.autoattack_seeds is None else \
        f" (seeds {', '.join(map(str, ev.autoattack_seeds))} only)"
    lines = [f"# {TITLE}", "",
             f"Accuracy (%) on the fixed test slice at ε = {eps:g}: clean and PGD-{ev.pgd_steps} "
             f"on {ev.n} samples" + (f", {ev.autoattack_label()} on {ev.autoattack_n}{which}"
                                     if aa else "") +
             ". Student columns: mean ± std over seeds (ddof = 1). `TAS train`: fraction of the "
             "student's training adversarial examples that also fool the teacher, last epoch; "
             f"`TAS test`: the same for PGD-{TRANSFER_STEPS} by the student on the {ev.n} test "
             f"samples. Teacher `{NONE}`: the student trained alone." +
             tables.attacks_note(ev), ""]
    heads = ["teacher", "teacher clean", f"teacher PGD-{ev.pgd_steps}",
             *(["teacher AA"] if aa else []), "method", "seeds", "clean",
             f"PGD-{ev.pgd_steps}", *(ev.attacks or ()), *(["AutoAttack"] if aa else []),
             "TAS train", "TAS test", "s/epoch"]
    lines += ["| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
    for s in summary:
        c = [s["teacher"], _num(s.get("teacher_clean")), _num(s.get("teacher_pgd")),
             *([_num(s.get("teacher_aa"))] if aa else []), s["method"], str(s["seeds"])]
        for m in ("clean_acc", "pgd_acc", *tables.attack_metrics(ev),
                  *(["autoattack_acc"] if aa else [])):
            c.append(_mean_pm(s[f"{m}_mean"], s[f"{m}_std"], s[f"{m}_n"]))
        for m in ("tas_train", "tas_test"):
            c.append(_mean_pm(s[f"{m}_mean"], s[f"{m}_std"], s[f"{m}_n"], pct=False))
        c.append("–" if s.get("epoch_seconds_mean") is None else f"{s['epoch_seconds_mean']:.1f}")
        lines.append("| " + " | ".join(c) + " |")
    ratios = cost_ratios(summary)
    if ratios:
        lines += ["", "Training time per epoch (`s/epoch`: the mean over seeds of each cell's "
                  "epoch times; cells ran on workers that shared the machine, so read the ratios, "
                  "which the sharing affects alike, rather than the seconds): "
                  + "; ".join(f"teacher {t}: saad / {base} = {r:.2f}" for t, base, r in ratios)
                  + "."]
    if missing:
        shown = ", ".join(missing[:12]) + (", ..." if len(missing) > 12 else "")
        lines += ["", f"{len(missing)} cell(s) not finished yet: {shown} (all in results.json)."]
    return "\n".join(lines) + "\n"


def write_distill_results(cfg: StudyConfig, cells: Sequence[Cell], out_dir,
                          teacher_evals: dict, imported: Optional[dict] = None) -> dict:
    out = Path(out_dir)
    rows, missing = distill_rows(cfg, cells, out, teacher_evals, imported)
    aa = cfg.eval.autoattack
    columns = ["cell", "teacher", "teacher_clean", "teacher_pgd", *(["teacher_aa"] if aa else []),
               "method", "seed", "clean_acc", "pgd_acc", *tables.attack_metrics(cfg.eval),
               *(["autoattack_acc"] if aa else []),
               "tas_train", "tas_test", "tas_test_given_fooled", "n_train", "epochs", "seconds",
               "epoch_seconds"]
    summary = tables.summarize(rows, ["teacher", "method"],
                               (*DISTILL_COLUMNS, *tables.attack_metrics(cfg.eval),
                                "epoch_seconds"))
    for s in summary:
        te = teacher_evals.get(s["teacher"]) or {}
        s.update({"teacher_clean": te.get("clean_acc"), "teacher_pgd": te.get("pgd_acc"),
                  "teacher_aa": te.get("autoattack_acc")})
    _, rcfg = attack_settings(cfg)
    io.write_text(out / "results.csv", tables.results_csv(rows, columns))
    io.write_text(out / "results.md", distill_markdown(summary, cfg.eval, rcfg.eps, missing))
    record = {"study": "distill", "title": TITLE, "cells_total": len(cells),
              "cells_finished": len(rows), "missing": missing, "columns": columns,
              "eval": {**dataclasses.asdict(cfg.eval), "eps": rcfg.eps, "alpha": rcfg.alpha,
                       "transfer_steps": TRANSFER_STEPS},
              "teachers": {name: {"path": teacher_path(cfg, out, name), **(te or {})}
                           for name, te in teacher_evals.items()},
              "notes": {"tas_train": "mean 'tas' of the last epoch in the cell's metrics.jsonl",
                        "tas_test": f"transfer.transfer_rate: PGD-{TRANSFER_STEPS} by the "
                                    f"student on the eval.n test slice",
                        "std": "sample standard deviation over seeds (ddof=1; 0 with one seed)",
                        "seconds": "sum of the cell's epoch times (training only)",
                        "epoch_seconds": "seconds / epochs"},
              "config": cfg.raw, "rows": rows, "summary": summary}
    io.write_json(out / "results.json", record)
    return record
