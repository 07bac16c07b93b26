"""Study result tables: one row per finished cell, grouped over seeds.

:func:`write_results` writes, atomically, ``results.csv`` (one row per finished cell: the grid
values, seed, clean/PGD/AutoAttack accuracy, training-set size, epochs, budget, seconds),
``results.md`` (mean ± std over seeds, with the number of seeds) and ``results.json`` (rows,
grouped summary, evaluation settings, the study config, the missing cells). With an
``eval.eps_ladder``, every table gets one ``pgd_acc@<radius>`` column per radius; with
``eval.attacks``, one ``robust_acc@<attack>`` column per attack.

Example:
    >>> record = write_results(cfg, cells, "runs/study", title="Coreset study")
    >>> record["summary"][0]["pgd_acc_mean"]
"""

from __future__ import annotations

import csv
import dataclasses
import io as _io
import json
import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .. import io
from .grid import (AUTOATTACK_FILE, Cell, EvalSpec, StudyConfig, cell_dir, radius_label,
                   read_attacks, read_autoattack, read_ladder)

RESULTS = ("results.csv", "results.md", "results.json")
METRIC_COLUMNS = ("clean_acc", "pgd_acc", "autoattack_acc")


def ladder_metric(label: str) -> str:
    """The column of the PGD accuracy at ladder radius ``label``, e.g. ``pgd_acc@0.02``."""
    return f"pgd_acc@{label}"


def ladder_metrics(ev: Optional[EvalSpec]) -> list[str]:
    """The ladder columns of ``ev`` in increasing radius (none without a ladder)."""
    return [ladder_metric(label) for label, _ in ev.ladder()] if ev is not None else []


def attack_metric(name: str) -> str:
    """The column of an ``eval.attacks`` attack's accuracy, e.g. ``robust_acc@fgsm``."""
    return f"robust_acc@{name}"


def attack_metrics(ev: Optional[EvalSpec]) -> list[str]:
    """The ``eval.attacks`` columns of ``ev``, in the config's order."""
    return [attack_metric(a) for a in (ev.attacks or ())] if ev is not None else []


def cell_row(cell: Cell, path: Path, ev: Optional[EvalSpec] = None) -> Optional[dict]:
    """The results row of a finished cell (None if it is not finished); with ``ev``'s
    ``eps_ladder``, one ``pgd_acc@<radius>`` column per radius, and with its ``attacks`` one
    ``robust_acc@<attack>`` column per attack (None until evaluated)."""
    if not (path / "result.json").is_file():
        return None
    res = json.loads((path / "result.json").read_text())
    aa = None
    if ev is not None:  # only a result made as ev asks (a stale one is computed again)
        aa = (read_autoattack(path, ev) or {}).get("robust_acc")
    elif (path / AUTOATTACK_FILE).is_file():
        aa = json.loads((path / AUTOATTACK_FILE).read_text())["robust_acc"]
    ladder = {}
    if ev is not None and ev.ladder():
        cached = read_ladder(path, ev)
        ladder = {ladder_metric(label): cached[str(r)]["robust_acc"] if str(r) in cached else None
                  for label, r in ev.ladder()}
    if ev is not None and ev.attacks:
        cached = read_attacks(path, ev)
        ladder.update({attack_metric(a): cached[a]["robust_acc"] if a in cached else None
                       for a in ev.attacks})
    return {"cell": cell.id, **cell.params, "clean_acc": res["clean_acc"],
            "pgd_acc": res["robust_acc"], **ladder, "autoattack_acc": aa,
            "n_train": res.get("n_train"), "epochs": res.get("epochs"),
            "budget": res.get("budget"),
            "seconds": round(float(sum(res.get("epoch_seconds") or [])), 2)}


def collect(cells: Sequence[Cell], out_dir, ev: Optional[EvalSpec] = None,
            imported: Optional[dict] = None, *,
            row_of: Optional[Callable[[Cell, Path], Optional[dict]]] = None,
            order: Optional[Callable[[Cell], Any]] = None) -> tuple[list[dict], list[str]]:
    """Rows of the finished cells (sorted by ``order``, by default the id) and the ids of the
    missing ones. A cell in ``imported`` (id -> row, from a ledger) takes a copy of that row;
    any other cell's row is ``row_of(cell, its directory)`` (default :func:`cell_row`), None
    while it is unfinished."""
    rows, missing = [], []
    imported = imported or {}
    row_of = row_of or (lambda cell, path: cell_row(cell, path, ev))
    for cell in sorted(cells, key=order or (lambda c: c.id)):
        row = dict(imported[cell.id]) if cell.id in imported else \
            row_of(cell, cell_dir(out_dir, cell))
        (rows.append(row) if row is not None else missing.append(cell.id))
    return rows, missing


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def summarize(rows: Sequence[dict], group: Sequence[str],
              metrics: Sequence[str] = METRIC_COLUMNS) -> list[dict]:
    """Rows grouped over seeds by the ``group`` columns (first-seen order): for each metric its
    ``<m>_mean``, ``<m>_std`` and ``<m>_n`` (the number of seeds with a value), plus ``seeds``."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[g] for g in group), []).append(row)
    out = []
    for key, members in groups.items():
        entry = {**dict(zip(group, key)), "seeds": len(members),
                 "n_train": members[0].get("n_train"), "epochs": members[0].get("epochs")}
        for m in metrics:
            values = [r[m] for r in members if r.get(m) is not None]
            mean, std = mean_std(values) if values else (None, None)
            entry.update({f"{m}_mean": mean, f"{m}_std": std, f"{m}_n": len(values)})
        out.append(entry)
    return out


def pct(value, digits: int = 2) -> str:
    """A fraction in %, with ``digits`` decimals; ``–`` for none."""
    return "–" if value is None else f"{100 * value:.{digits}f}"


def pct_cell(mean, std, n: int) -> str:
    """``mean ± std`` in %, the mean alone for a single value, ``–`` for none."""
    if mean is None:
        return "–"
    return pct(mean) + (f" ± {pct(std)}" if n > 1 else "")


def results_markdown(summary: Sequence[dict], group: Sequence[str], *, title: str,
                     ev: EvalSpec, eps: Optional[float], missing: Sequence[str] = (),
                     autoattack: bool = False) -> str:
    """The seeds-grouped Markdown table of :func:`summarize` (accuracies in %)."""
    eps_text = f" at ε = {eps:g}" if eps is not None else ""
    ladder = ev.ladder()
    if ladder:
        eps_text += f" and at ε = {', '.join(label for label, _ in ladder)} (step ε/4 each)"
    aa = ""
    if autoattack:
        which = "" if ev.autoattack_seeds is None else \
            f" (seed{'s' if len(ev.autoattack_seeds) > 1 else ''} " \
            f"{', '.join(map(str, ev.autoattack_seeds))} only)"
        at = "" if ev.autoattack_radius() is None else f" at ε = {autoattack_label(ev)}"
        aa = f", {ev.autoattack_label()}{at} on {ev.autoattack_n}{which}"
    lines = [f"# {title}", "",
             f"Accuracy (%) on the fixed test slice: clean and PGD-{ev.pgd_steps}{eps_text} on "
             f"{ev.n} samples{aa}. Mean ± std over seeds (sample std, ddof = 1; the mean alone "
             "when one seed has a value); `seeds` counts the finished seeds." +
             attacks_note(ev), ""]
    heads = [*group, "seeds", "n_train", "epochs", "clean", f"PGD-{ev.pgd_steps}"]
    metrics = ["clean_acc", "pgd_acc"]
    for label, _ in ladder:
        heads.append(f"PGD-{ev.pgd_steps} ε={label}")
        metrics.append(ladder_metric(label))
    for name in ev.attacks or ():
        heads.append(name)
        metrics.append(attack_metric(name))
    if autoattack:
        heads.append("AutoAttack")
        metrics.append("autoattack_acc")
    lines += ["| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
    for s in summary:
        cells = [format_value(s[g]) for g in group] + [str(s["seeds"]), str(s["n_train"]), str(s["epochs"])]
        cells += [pct_cell(s[f"{m}_mean"], s[f"{m}_std"], s[f"{m}_n"]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    if missing:
        shown = ", ".join(missing[:12]) + (", ..." if len(missing) > 12 else "")
        lines += ["", f"{len(missing)} cell(s) not finished yet: {shown} (all in results.json)."]
    return "\n".join(lines) + "\n"


def attacks_note(ev: EvalSpec) -> str:
    """The sentence on the ``eval.attacks`` columns (empty without them)."""
    if not ev.attacks:
        return ""
    return (f" Columns {', '.join(ev.attacks)}: that registered attack at the cell's ε and step, "
            f"{ev.pgd_steps} steps, seed 0, on the same {ev.n} samples.")


def autoattack_label(ev: EvalSpec) -> Optional[str]:
    """AutoAttack's radius as written in the config (None: the cell's ε)."""
    if ev.autoattack_eps is not None:
        return radius_label(ev.autoattack_eps)
    middle = ev.middle()
    return None if middle is None else middle[0]


def format_value(value) -> str:
    """A table cell of a grid value (floats in ``g`` format)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def results_csv(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buf.getvalue()


def write_results(cfg: StudyConfig, cells: Sequence[Cell], out_dir, *, title: str,
                  extra: Optional[dict] = None, imported: Optional[dict] = None,
                  ledger_eps: Optional[float] = None) -> dict:
    """Collect the finished cells (``imported``: id -> row of the cells a ledger holds, whose
    recorded ε is ``ledger_eps``) and write results.csv / .md / .json; returns the JSON dict."""
    out = Path(out_dir)
    rows, missing = collect(cells, out, cfg.eval, imported)
    group = list(cfg.grid)
    autoattack = cfg.eval.autoattack
    ladder = ladder_metrics(cfg.eval) + attack_metrics(cfg.eval)
    columns = ["cell", *group, "seed", "clean_acc", "pgd_acc", *ladder,
               *(["autoattack_acc"] if autoattack else []),
               "n_train", "epochs", "budget", "seconds"]
    summary = summarize(rows, group, (*METRIC_COLUMNS, *ladder))
    eps = cfg.base.eps
    if eps is None:  # the card's: as a finished cell here recorded it, else as the ledger did
        ran_here = [cell_dir(out, c) / "result.json" for c in cells if c.id not in (imported or {})]
        eps = next((json.loads(f.read_text())["eval"]["eps"] for f in ran_here if f.is_file()),
                   ledger_eps)
    io.write_text(out / "results.csv", results_csv(rows, columns))
    io.write_text(out / "results.md", results_markdown(summary, group, title=title, ev=cfg.eval,
                                                       eps=eps, missing=missing,
                                                       autoattack=autoattack))
    notes = {"seconds": "sum of the cell's epoch times (training only)",
             "std": "sample standard deviation over seeds (ddof=1; 0 with one seed)"}
    if cfg.eval.attacks:
        notes["robust_acc@<attack>"] = attacks_note(cfg.eval).strip()
    if cfg.eval.ladder():
        notes["pgd_acc@<eps>"] = (f"PGD-{cfg.eval.pgd_steps} accuracy at that radius, step "
                                  "eps/4, seed 0, on the same test slice as pgd_acc")
    record = {"study": cfg.study, "title": title, "cells_total": len(cells),
              "cells_finished": len(rows), "missing": missing, "columns": columns,
              "eval": {**dataclasses.asdict(cfg.eval), "eps": eps}, "notes": notes,
              "config": cfg.raw, "rows": rows, "summary": summary, **(extra or {})}
    io.write_json(out / "results.json", record)
    return record
