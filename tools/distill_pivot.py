"""Print a distillation study's results as method x teacher tables (Markdown), for docs/results.md.

    python tools/distill_pivot.py runs/distill-fmnist-long/results.json

One table per metric (AutoAttack, PGD, held-out TAS): a row per method, a column per teacher
(weakest first, its own accuracy in the header), mean ± std over the seeds that have the value,
the number of seeds in brackets where it is not the study's full count; the student trained
alone closes the accuracy tables.
"""

from __future__ import annotations

import json
import sys

NONE = "none"


def fmt(s: dict, key: str, full: int, scale: float) -> str:
    n = s.get(f"{key}_n") or 0
    if not n or s.get(f"{key}_mean") is None:
        return "–"
    text = f"{scale * s[f'{key}_mean']:.1f}"
    if n > 1:
        text += f" ± {scale * s[f'{key}_std']:.1f}"
    return text + ("" if n == full else f" ({n})")


def main(path: str) -> None:
    record = json.load(open(path))
    summary = record["summary"]
    full = max(s.get("seeds") or 0 for s in summary)
    distilled = [s for s in summary if s["teacher"] != NONE]
    strength = {s["teacher"]: (s.get("teacher_aa") or s.get("teacher_pgd") or 0.0)
                for s in distilled}
    teachers = sorted(strength, key=lambda t: (strength[t], t))
    methods = list(dict.fromkeys(s["method"] for s in distilled))
    by = {(s["teacher"], s["method"]): s for s in summary}
    pgd = f"PGD-{record['eval'].get('pgd_steps', '')}"
    print(f"{record['cells_finished']} of {record['cells_total']} cells finished\n")
    for key, name, teacher_key, scale in (("autoattack_acc", "AutoAttack", "teacher_aa", 100),
                                          ("pgd_acc", pgd, "teacher_pgd", 100),
                                          ("tas_test", "held-out TAS (%)", None, 100)):
        heads = []
        for t in teachers:
            value = next((s.get(teacher_key) for s in distilled if s["teacher"] == t), None) \
                if teacher_key else None
            heads.append(f"{t} ({100 * value:.1f})" if value is not None else t)
        print(f"{name}:\n")
        print("| method | " + " | ".join(heads) + " |")
        print("| --- | " + " | ".join("---:" for _ in teachers) + " |")
        for m in methods:
            cells = [fmt(by[(t, m)], key, full, scale) if (t, m) in by else "–" for t in teachers]
            print(f"| {m} | " + " | ".join(cells) + " |")
        for s in summary:
            if s["teacher"] == NONE and teacher_key:
                print(f"| {s['method']} alone (no teacher) | {fmt(s, key, full, scale)} |"
                      + " |" * (len(teachers) - 1))
        print()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/distill_pivot.py RESULTS.json")
    main(sys.argv[1])
