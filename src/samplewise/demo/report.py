"""The demo's outputs: :func:`assemble` gathers the stage records into ``results.json``,
:func:`reading` interprets its numbers, and :func:`write_outputs` writes ``results.json``, the
three plots and ``report.md`` (two Markdown tables, the reading, the settings), each atomically
and only when its content changed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np

from .. import io
from .plots import plot_aign, plot_coreset, plot_distill
from .settings import (DEMO_METHODS, DEMO_SELECTORS, FORMAT, PLOTS, REPORT_FILE, RESULTS_FILE,
                       DemoSettings, Stage, model_label)


def write_outputs(results: dict, table, out: Path) -> dict:
    """Write ``results.json``, the plots and ``report.md`` (each only if its content changed)."""
    tables = {"coreset": coreset_table(results), "distillation": distill_table(results)}
    results = {**results, "plots": dict(PLOTS)}
    io.write_if_changed(out / RESULTS_FILE, io.json_text(results))
    plots = {"aign": plot_aign(table, results), "coreset": plot_coreset(results),
             "distill": plot_distill(results)}
    for key, png in plots.items():
        io.write_if_changed(out / PLOTS[key], png)
    io.write_if_changed(out / REPORT_FILE, report_markdown(results, tables))
    paths = {"report": str(out / REPORT_FILE), "results": str(out / RESULTS_FILE),
             **{k: str(out / v) for k, v in PLOTS.items()}}
    return {**results, "tables": tables, "paths": paths}


def assemble(s: DemoSettings, stages: list[Stage], records: dict, table, out: Path) -> dict:
    """``results.json``: settings, every stage's numbers, the reading and the tables."""
    by_kind = {st.name: st for st in stages}
    ev = records["coreset-full"]["eval"] or {}
    aign = table.get("aign").astype(np.float64)
    cut = _easycore_cut(table, s.fraction)
    coreset = {"fraction": s.fraction, "objective": s.coreset_objective,
               "model": s.coreset_model, "model_args": dict(s.coreset_model_args),
               "epochs": s.coreset_epochs, "budget": "epochs",
               "radii": [e["eps"] for e in records["coreset-full"]["ladder"]],
               "reference_standard": records["scoring"],
               "methods": {by_kind[n].selector: records[n] for n in records
                           if by_kind[n].kind == "coreset"}}
    classes, totals = np.unique(table.labels, return_counts=True)
    for name in DEMO_SELECTORS:
        meta = json.loads((out / "subsets" / f"{name}.json").read_text())
        hist = meta.get("class_histogram") or {}
        coreset["methods"][name]["class_histogram"] = hist
        coreset["methods"][name]["class_share_kept"] = {
            str(int(c)): round(hist.get(str(int(c)), 0) / int(t), 4)
            for c, t in zip(classes, totals)}
        aign_in = (meta.get("scores", {}).get("aign") or {}).get("inside")
        coreset["methods"][name]["mean_aign"] = aign_in
    distill = {"teacher": records["teacher"], "student_alone": records["student-alone"],
               "student_model": s.student_model, "student_model_args": dict(s.student_model_args),
               "epochs": s.student_epochs,
               "methods": {by_kind[n].method: records[n] for n in records
                           if by_kind[n].kind == "student" and by_kind[n].method in DEMO_METHODS}}
    results = {
        "format": FORMAT, "dataset": s.dataset, "quick": s.quick, "settings": s.to_dict(),
        "eval": {"attack": "pgd", "eps": ev.get("eps"), "alpha": ev.get("alpha"),
                 "steps": ev.get("steps"), "n": ev.get("n"), "seed": ev.get("seed")},
        "scoring": {"run": "scoring", "model": s.scoring_model, "epochs": s.scoring_epochs,
                    "n_scored": int(len(aign)), "easycore_cut": cut,
                    "aign": {"mean": float(aign.mean()), "median": float(np.median(aign)),
                             "min": float(aign.min()), "max": float(aign.max())}},
        "coreset": coreset, "distillation": distill,
        "stages": [{"name": n, "seconds": records[n]["seconds"]} for n in records],
        "seconds": round(sum(r["seconds"] for r in records.values()), 1),
    }
    results["reading"] = reading(results)
    return results


def _easycore_cut(table, fraction: float) -> float:
    from ..coreset import subset_size
    v = np.sort(table.get("aign").astype(np.float64))
    return float(v[subset_size(fraction, len(v)) - 1])


def _pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def coreset_table(results: dict) -> str:
    """One row per coreset arm: samples, clean accuracy, PGD accuracy at every ladder radius
    (the last is the card's ε); the scoring run is a reference row when the arms are trained
    adversarially (under standard training ``coreset-full`` is that reference)."""
    c, ev = results["coreset"], results["eval"]
    radii = c["radii"]
    head = (f"| training data ({c['objective']}, {c['model']}) | samples | clean acc | "
            + " | ".join(f"PGD-{ev['steps']} ε={r:g}" for r in radii)
            + " |\n| --- | ---: | ---: | " + " | ".join("---:" for _ in radii) + " |\n")
    rows = []
    for name, r in c["methods"].items():
        label = "full training set" if name == "full" else \
            f"{name} {c['fraction']:.0%} ({_KEEPS.get(name, '')})"
        rows.append(f"| {label} | {r['n_train']} | {_pct(r['clean_acc'])} | "
                    + " | ".join(_pct(e["robust_acc"]) for e in r["ladder"]) + " |")
    if c["objective"] != "standard":
        std = c["reference_standard"]
        rows.append(f"| reference: standard training, full set (the scoring run) | "
                    f"{std['n_train']} | {_pct(std['clean_acc'])} | "
                    + " | ".join("–" for _ in radii[:-1]) + ("" if len(radii) == 1 else " | ")
                    + f"{_pct(std['robust_acc'])} |")
    return head + "\n".join(rows) + "\n"


_KEEPS = {"easycore": "lowest AIGN", "random": "uniform", "el2n": "highest EL2N"}


def distill_table(results: dict) -> str:
    d, ev = results["distillation"], results["eval"]
    head = (f"| model | training | clean acc | PGD-{ev['steps']} acc | TAS (last epoch) |\n"
            "| --- | --- | ---: | ---: | ---: |\n")
    t, a = d["teacher"], d["student_alone"]
    rows = [f"| teacher {model_label(t)} | {t['objective']} | {_pct(t['clean_acc'])} | "
            f"{_pct(t['robust_acc'])} | – |",
            f"| student {model_label(a)} | pgd-at, no teacher | {_pct(a['clean_acc'])} | "
            f"{_pct(a['robust_acc'])} | – |"]
    for m, r in d["methods"].items():
        tas = "–" if r.get("tas") is None else f"{r['tas']:.3f}"
        rows.append(f"| student {model_label(r)} | {m} | {_pct(r['clean_acc'])} | "
                    f"{_pct(r['robust_acc'])} | {tas} |")
    return head + "\n".join(rows) + "\n"


def _noise(p1: float, p2: float, n: int) -> float:
    """Two binomial standard errors of a difference of two accuracies on ``n`` test images."""
    p = min(max((p1 + p2) / 2, 1.0 / n), 1 - 1.0 / n)
    return 2 * math.sqrt(2 * p * (1 - p) / n)


def _compare(a_name: str, a: float, b_name: str, b: float, n: int, short: bool = False) -> str:
    """``a`` against ``b``: above, below, or within the binomial noise (:func:`_noise`) of an
    ``n``-image test slice; ``short`` gives a compact form for lists of comparisons."""
    d, noise, side = 100 * (a - b), 100 * _noise(a, b, n), _side(a, b, n)
    word = "above" if side > 0 else "below"
    if short:
        if side == 0:
            return f"{a_name} and {b_name} within noise ({d:+.1f}, noise ≈{noise:.1f})"
        return f"{a_name} {abs(d):.1f} points {word} {b_name} (noise ≈{noise:.1f})"
    if side == 0:
        return (f"{a_name} and {b_name} were within {abs(d):.1f} points of each other, less than "
                f"the ≈{noise:.1f}-point noise of a {n}-image test slice: no difference in this "
                "run")
    return (f"{a_name} was {abs(d):.1f} points {word} {b_name}, more than the ≈{noise:.1f}-point "
            f"noise of the {n}-image test slice, but this is one seed")


def _order(names: list, acc: dict) -> str:
    """``a 50.0% > b 40.0% = c 40.0%``: ``names`` sorted by ``acc``, ties (as printed) joined
    by ``=``."""
    out = f"{names[0]} {_pct(acc[names[0]])}"
    for prev, k in zip(names, names[1:]):
        out += f" {'=' if _pct(acc[prev]) == _pct(acc[k]) else '>'} {k} {_pct(acc[k])}"
    return out


def _side(a: float, b: float, n: int) -> int:
    """+1 when ``a`` is above ``b`` by more than the noise, -1 below, 0 within it."""
    d = a - b
    return 0 if abs(d) < _noise(a, b, n) else (1 if d > 0 else -1)


#: what the studies found about the coreset half (docs/results.md), stated as a fixed sentence
STUDIES_CORESET = (
    "What the studies found (docs/results.md §0, §5, §6, §7): under standard training "
    "(Fashion-MNIST 10k, cnn-small, 15 epochs, 3 seeds, nine other selectors) EasyCore's "
    "advantage shows at the larger of the small radii, ε = 0.05 (half the card's ε): 26.4 ± 2.2% "
    "PGD-20 at 30% against "
    "15.2 ± 3.0 for CCS (the best other selector) and 11.3 ± 1.1 for random, at 5–9 points "
    "lower clean accuracy, and above every other selector's robust-vs-clean curve; at ε = 0.02 "
    "it ties CCS, Moderate and random at 30–50% and beats the hardness-first selectors; at 10% "
    "it collapses (class skew). Under adversarial training (PGD-AT, TRADES; 10 epochs, §6) "
    "EasyCore does not beat random, CCS or Moderate: under TRADES it ties them, and under "
    "PGD-AT it loses to random by 7–11 points. On CIFAR-10 (JPEG q75 copy, 10k, 30 standard "
    "epochs, §7) EasyCore is the most robust coreset or ties the best at 2/255 and 4/255, but it "
    "leads random, CCS, Moderate and k-center by 1–3 points, not 7, and the hardness-first "
    "selectors by 4–20.")

#: what the studies found about the distillation half (docs/results.md)
STUDIES_DISTILL = (
    "What the studies found (docs/results.md §0, §4): on Fashion-MNIST SAAD against ARD, "
    "RSLAD, IAD, AdaAD and IGDM is mixed and within one seed's noise, robust saturation shows "
    "only weakly, and TAS does not explain it at that scale; no regime where SAAD's advantage "
    "shows was found, so this half of the demo keeps its setup, and a tie here is what the "
    "studies would lead one to expect.")


def reading(results: dict) -> dict:
    """The report's interpretation, generated from the numbers.

    Returns ``{"coreset": str, "distillation": str, "does_not": str}``: what this run's numbers
    say about the coresets and the distillation methods, and what they cannot say.
    """
    c, d, ev, s = results["coreset"], results["distillation"], results["eval"], results["settings"]
    n = int(ev.get("n") or s["eval_n"])
    steps = ev["steps"]
    m = c["methods"]
    full, std = m["full"], c["reference_standard"]
    radii = c["radii"]
    cs = [_regime_sentence(c, full, std, steps, n)]
    ahead = {}
    for i, r in enumerate(radii):
        acc = {k: m[k]["ladder"][i]["robust_acc"] for k in DEMO_SELECTORS}
        order = sorted(DEMO_SELECTORS, key=lambda k: -acc[k])
        card = " (the card's ε)" if i == len(radii) - 1 else ""
        cs.append(f"At ε = {r:g}{card} the PGD-{steps} order was " + _order(order, acc)
                  + f" (full data {_pct(full['ladder'][i]['robust_acc'])}): "
                  + _compare("EasyCore", acc["easycore"], "random", acc["random"], n, short=True)
                  + "; "
                  + _compare("EasyCore", acc["easycore"], "EL2N", acc["el2n"], n, short=True)
                  + ".")
        ahead[r] = _side(acc["easycore"], acc["random"], n)
    groups = {w: [f"{r:g}" for r in radii if ahead[r] == v]
              for w, v in (("ahead of", 1), ("behind", -1), ("within the noise of", 0))}
    cs.append("So in this run EasyCore was " + "; ".join(
        f"{w} random at ε = {', '.join(rs)}" for w, rs in groups.items() if rs)
        + f" (noise: two binomial standard errors of a difference on the {n}-image test slice; "
        "one seed).")
    dc = 100 * (m["easycore"]["clean_acc"] - m["random"]["clean_acc"])
    cs.append(f"On clean accuracy EasyCore was {abs(dc):.1f} points "
              f"{'above' if dc >= 0 else 'below'} random ({_pct(m['easycore']['clean_acc'])} vs "
              f"{_pct(m['random']['clean_acc'])}).")
    spans = {k: m[k].get("class_share_kept") for k in ("easycore", "random")}
    if all(spans.values()):
        def span(k):
            v = spans[k]
            lo, hi = min(v, key=v.get), max(v, key=v.get)
            return f"{v[lo]:.0%} (class {lo}) to {v[hi]:.0%} (class {hi})"
        cs.append(f"EasyCore's global AIGN ranking kept {span('easycore')} of each class, "
                  f"random {span('random')}; such a skew alone can cost accuracy on the "
                  "under-kept classes, and this run does not separate it from the effect of "
                  "hardness itself (a class-balanced EasyCore would).")
    cs.append(STUDIES_CORESET + (" That is why this demo trains every coreset arm with standard "
                                 "training." if c["objective"] == "standard" else ""))

    meths = d["methods"]
    t, alone = d["teacher"], d["student_alone"]
    top = max(meths, key=lambda k: meths[k]["robust_acc"])
    base_best = max((k for k in meths if k != "saad"), key=lambda k: meths[k]["robust_acc"])
    ds = [f"The teacher ({model_label(t)}, {t['objective']}) reached {_pct(t['robust_acc'])} "
          f"PGD-{steps} accuracy and the student trained alone with pgd-at {_pct(alone['robust_acc'])}. "
          f"The most robust distilled student was {top} ({_pct(meths[top]['robust_acc'])}): "
          + _compare(f"the {top} student", meths[top]["robust_acc"], "the student trained alone",
                     alone["robust_acc"], n) + "."]
    ds.append(_compare("SAAD", meths["saad"]["robust_acc"], f"the best baseline ({base_best})",
                       meths[base_best]["robust_acc"], n) + ".")
    with_tas = [k for k in meths if meths[k].get("tas") is not None]
    if len(with_tas) >= 2:
        by_tas = sorted(with_tas, key=lambda k: -meths[k]["tas"])
        rob = [meths[k]["robust_acc"] for k in with_tas]
        spread, noise = max(rob) - min(rob), _noise(max(rob), min(rob), n)
        agree = by_tas[0] == max(with_tas, key=lambda k: meths[k]["robust_acc"])
        if spread < noise:
            link = (f"the students' PGD accuracies all lay within {100 * spread:.1f} points, "
                    f"inside the ≈{100 * noise:.1f}-point noise, so TAS differences went with no "
                    "measurable robustness difference here")
        else:
            link = f"the highest-TAS method {'was' if agree else 'was not'} the most robust student"
        ds.append(
            f"TAS (the share of the student's own adversarial examples that also fool the "
            f"teacher, last training epoch) ordered the methods {' > '.join(by_tas)} "
            f"({', '.join(format(meths[k]['tas'], '.2f') for k in by_tas)}); {link}. With "
            f"{len(with_tas)} methods and one seed this is an anecdote, not a test of the SAAD "
            "paper's finding that student robustness follows TAS (the methods also craft x' "
            "differently, which changes TAS by itself).")
    ds.append(STUDIES_DISTILL)

    size = full["n_train"]
    does_not = (
        f"What this does not show: anything general. The data are {size} training images of "
        f"{results['dataset']}, the models are small ({model_label(full)} for the coresets, "
        f"{model_label(t)} → {model_label(alone)} for distillation), training is "
        f"{s['coreset_epochs']} epochs of {c['objective']} training (coresets) and "
        f"{s['student_epochs']} (students), adversarial objectives with {s['attack_steps']}-step "
        f"PGD, there is one seed ({s['seed']}) and one fraction ({c['fraction']:.0%}), and "
        f"robustness is PGD-{steps} on {n} test images (the coresets at ε = "
        f"{', '.join(format(r, 'g') for r in c['radii'])}), not AutoAttack. Differences of a few "
        "points are within what another seed could change, which this run does not measure. "
        "The papers' claims (EasyCore: up to +7 points adversarial accuracy over other coresets; "
        "SAAD: transfer-aware sample weights give more robust students than ARD, RSLAD, AdaAD "
        "or IGDM) concern CIFAR-scale ResNets and long "
        "schedules and are neither confirmed nor refuted here. Every number above is real, read "
        "from this run's result.json and metrics.jsonl files.")
    if results.get("quick"):
        does_not = (f"This was a --quick run ({s['coreset_epochs']} epochs, {s['attack_steps']} "
                    f"attack steps, {n} test images): it checks that every stage runs, and its "
                    "numbers mean nothing. " + does_not)
    return {"coreset": " ".join(cs), "distillation": " ".join(ds), "does_not": does_not}


def _regime_sentence(c: dict, full: dict, std: dict, steps: int, n: int) -> str:
    """The coreset paragraph's first sentence: how the arms were trained, and (adversarial
    objectives only) whether the full-data run learned anything robust at all."""
    if c["objective"] == "standard":
        radii = ", ".join(f"{e['eps']:g}" for e in full["ladder"])
        return (f"Every coreset arm and the full-data reference was trained the same way: "
                f"standard training (no attack) of {model_label(c)} for {c['epochs']} epochs, "
                f"the studies' regime (docs/results.md §5). Standard-trained models break at "
                f"the card's ε, so robustness is read with PGD-{steps} (step ε/4) on a ladder of "
                f"radii ε = {radii}; on the full training set this gave "
                + ", ".join(_pct(e["robust_acc"]) for e in full["ladder"])
                + f" (clean {_pct(full['clean_acc'])}).")
    at_clear = full["robust_acc"] - std["robust_acc"] > _noise(full["robust_acc"],
                                                               std["robust_acc"], n)
    eps = full["ladder"][-1]["eps"]
    return (f"On the full training set {c['objective']} reached {_pct(full['robust_acc'])} "
            f"PGD-{steps} accuracy at ε = {eps:g}, against {_pct(std['robust_acc'])} for "
            f"standard training (clean {_pct(full['clean_acc'])} vs {_pct(std['clean_acc'])}): "
            + ("adversarial training clearly raised robustness, so the comparison below is "
               "between models that learned something robust." if at_clear else
               "adversarial training did not clearly raise robustness in this run, so the "
               "coreset comparison below says little."))


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
             "same slice. The coreset models are also read at smaller radii, ε = "
             f"{', '.join(format(r, 'g') for r in results['coreset']['radii'][:-1])} (PGD-"
             f"{ev['steps']}, step ε/4, same slice).", "",
             "## Hardness (AIGN) of the training samples", "",
             f"A standard training of {sc['model']} for {sc['epochs']} epochs scored "
             f"{sc['n_scored']} samples; AIGN (mean input-gradient L2 norm over the epochs) has "
             f"median {sc['aign']['median']:.3g} (range {sc['aign']['min']:.3g} to "
             f"{sc['aign']['max']:.3g}). EasyCore keeps the {s['fraction']:.0%} with AIGN ≤ "
             f"{sc['easycore_cut']:.3g}.", "",
             f"![AIGN distribution]({PLOTS['aign']})", "",
             *_atlas_lines(results.get("atlas")),
             f"## Coresets: {results['coreset']['objective']} training on {s['fraction']:.0%} of "
             "the data",
             "", tables["coreset"],
             f"![accuracy against the PGD radius per coreset]({PLOTS['coreset']})", "",
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
