"""The demo's outputs: ``results.json``, the plots and ``report.md``, each written atomically and
only when its content changed."""

from __future__ import annotations

import json
from pathlib import Path

from .. import io
from .plots import plot_aign, plot_coreset, plot_distill
from .results import coreset_table, distill_table
from .settings import PLOTS, REPORT_FILE, RESULTS_FILE


def _json_text(obj) -> str:
    return json.dumps(obj, indent=2, default=io._json_default) + "\n"


def _write_if_changed(path: Path, data: str | bytes) -> bool:
    """Atomic write unless the file already holds exactly ``data`` (so a rerun keeps mtimes)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if path.is_file() and path.read_bytes() == raw:
        return False
    io.write_bytes(path, raw)
    return True


def write_outputs(results: dict, table, out: Path) -> dict:
    """Write ``results.json``, the plots and ``report.md`` (each only if its content changed)."""
    tables = {"coreset": coreset_table(results), "distillation": distill_table(results)}
    results = {**results, "plots": dict(PLOTS)}
    _write_if_changed(out / RESULTS_FILE, _json_text(results))
    plots = {"aign": plot_aign(table, results), "coreset": plot_coreset(results),
             "distill": plot_distill(results)}
    for key, png in plots.items():
        _write_if_changed(out / PLOTS[key], png)
    _write_if_changed(out / REPORT_FILE, report_markdown(results, tables))
    paths = {"report": str(out / REPORT_FILE), "results": str(out / RESULTS_FILE),
             **{k: str(out / v) for k, v in PLOTS.items()}}
    return {**results, "tables": tables, "paths": paths}


def _atlas_lines(atlas) -> list[str]:
    """The atlas paragraph of the report: a link, two numbers and the pictures."""
    if not atlas:
        return []
    text = (f"The hardness atlas of the scoring run ([{atlas['report']}]({atlas['report']})) "
            "shows each class's 8 lowest- and 8 highest-AIGN training images")
    sp = atlas["reading"].get("spearman")
    if atlas["datamap"] and sp and sp["aign_confidence"]["rho"] is not None:
        text += (", and a data map: each sample's mean true-class probability over the epochs "
                 "(confidence) against its standard deviation (variability), coloured by AIGN "
                 f"(Spearman AIGN vs confidence {sp['aign_confidence']['rho']:+.2f}, vs "
                 f"variability {sp['aign_variability']['rho']:+.2f})")
    lines = [text + ".", "", f"![easiest and hardest samples per class]({atlas['grid']})", ""]
    if atlas["datamap"]:
        lines += [f"![data map]({atlas['datamap']})", ""]
    return lines


def report_markdown(results: dict, tables: dict) -> str:
    s, ev, sc = results["settings"], results["eval"], results["scoring"]
    d = results["distillation"]
    quick = " (--quick)" if results["quick"] else ""
    lines = [f"# samplewise demo: {results['dataset']}{quick}",
             "",
             f"Command: `samplewise demo --dataset {results['dataset']}"
             f"{' --quick' if results['quick'] else ''} --out DIR`. "
             f"Stages took {results['seconds']:.0f} s in all (wall time of the calls that ran "
             "them). Robust accuracy is PGD-"
             f"{ev['steps']} (step {ev['alpha']:g}, random start) at the dataset card's ε = "
             f"{ev['eps']:g}, on a fixed slice of {ev['n']} test images; clean accuracy on the "
             "same slice.", "",
             "## Hardness (AIGN) of the training samples", "",
             f"A standard training of {sc['model']} for {sc['epochs']} epochs scored "
             f"{sc['n_scored']} samples; AIGN (mean input-gradient L2 norm over the epochs) has "
             f"median {sc['aign']['median']:.3g} (range {sc['aign']['min']:.3g} to "
             f"{sc['aign']['max']:.3g}). EasyCore keeps the {s['fraction']:.0%} with AIGN ≤ "
             f"{sc['easycore_cut']:.3g}.", "",
             f"![AIGN distribution]({PLOTS['aign']})", "",
             *_atlas_lines(results.get("atlas")),
             f"## Coresets: {results['coreset']['objective']} on {s['fraction']:.0%} of the data",
             "", tables["coreset"],
             f"![clean and PGD accuracy per coreset]({PLOTS['coreset']})", "",
             "## Distillation: teacher → smaller student", "",
             f"Students trained {d['epochs']} epochs from the teacher in `teacher/`; TAS is the "
             "share of the student's own adversarial examples (training batches, last epoch) "
             "that also fool the teacher.", "", tables["distillation"],
             f"![student PGD accuracy and TAS]({PLOTS['distill']})", "",
             "## What this shows and what it does not", ""]
    rd = results["reading"]
    lines += [f"**Coresets.** {rd['coreset']}", "", f"**Distillation.** {rd['distillation']}", "",
              rd["does_not"], "",
              "## Settings", "", "| setting | value |", "| --- | --- |"]
    for k, v in s.items():
        lines.append(f"| {k} | `{json.dumps(v)}` |")
    lines += ["", "| stage | seconds |", "| --- | ---: |"]
    lines += [f"| {st['name']} | {st['seconds']:.1f} |" for st in results["stages"]]
    lines += ["", "Each stage's run directory (`config.yaml`, `metrics.jsonl`, `result.json`, "
              "`model.pt`) is under this folder; `results.json` holds every number above.", ""]
    return "\n".join(lines)
