"""Redraw a coreset study's fraction plots from a table in docs/results.md, for studies whose
run directories are gone (docs/results.md §2: its ccs line by AUM, as published, after §2a).

    PYTHONPATH=src python tools/replot_results_table.py docs/results.md "## 2. The EasyCore" \
        docs/img/coreset_fmnist

The table is the first one after the heading: columns selector | fraction | objective | seeds |
n_train | epochs | clean | PGD-20 | AutoAttack, cells "mean ± std" in %. A selector label
"name (note)" is drawn as "name"; labels listed in DROP are left out.
"""
import re
import sys

from samplewise.studies.grid import EvalSpec
from samplewise.studies.plots import plot_vs_fraction

DROP = {"ccs (AIGN-stratified variant)"}
RENAME = {"ccs (AUM, as published; §2a)": "ccs (AUM)"}


def table_after(text: str, heading: str) -> list[list[str]]:
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| selector"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip(" |").split(" | ")])
    return rows


def value(cell: str):
    m = re.match(r"([\d.]+)(?: ± ([\d.]+))?$", cell)
    return (float(m.group(1)) / 100, float(m.group(2) or 0) / 100) if m else (None, None)


def main(path: str, heading: str, prefix: str) -> None:
    summary = []
    for sel, frac, objective, seeds, _, _, clean, pgd, aa in table_after(open(path).read(), heading):
        if sel in DROP:
            continue
        row = {"selector": RENAME.get(sel, sel), "fraction": float(frac), "objective": objective,
               "seeds": int(seeds)}
        for metric, cell in (("clean_acc", clean), ("pgd_acc", pgd), ("autoattack_acc", aa)):
            row[f"{metric}_mean"], row[f"{metric}_std"] = value(cell)
        summary.append(row)
    ev = EvalSpec(n=1000, pgd_steps=20)
    note = "mean ± std over 3 seeds (AutoAttack: seed 0, n=200)"
    for metric, name, label in (("pgd_acc", "robust", "PGD-20 accuracy (%)"),
                                ("autoattack_acc", "autoattack", "AutoAttack (apgd-ce+apgd-t) accuracy (%)"),
                                ("clean_acc", "clean", "clean accuracy (%)")):
        out = plot_vs_fraction(summary, metric, f"{prefix}_{name}.png", ylabel=label,
                               title=f"{label[:-4]} vs coreset size\nn={ev.n} test samples; {note}")
        print(out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
