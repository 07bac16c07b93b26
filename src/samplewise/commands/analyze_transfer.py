"""``samplewise analyze transfer``: TAS of a student's adversarial examples on its teacher."""

from __future__ import annotations

import argparse
import json

HELP = ("Adversarial transferability: the share of the student's own PGD examples on held-out "
        "data that also fool the teacher (overall and among those that fool the student).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, help="teacher: model file, run dir or robustbench:ID")
    p.add_argument("--student", required=True, help="student: model file or run directory")
    p.add_argument("--dataset", help="default: the dataset the student was trained on")
    p.add_argument("--eps", type=float, help="default: the dataset card's")
    p.add_argument("--steps", type=int, default=10, help="student PGD steps (default 10)")
    p.add_argument("--n", type=int, default=1000, help="fixed test slice size (default 1000)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="also write the result (and per-sample flags) to this JSON file")


def run(a: argparse.Namespace) -> int:
    """Measure the transfer rate, print it as JSON (``--out``: also write it)."""
    from .. import io
    from ..data import load_dataset
    from ..models import load_model, load_teacher
    from ..transfer import transfer_rate

    student = load_model(a.student, device=a.device)
    bundle = load_dataset(a.dataset or student.card.name)
    teacher = load_teacher(a.teacher, card=bundle.card, device=a.device)
    eps = bundle.card.eps if a.eps is None else a.eps
    res = transfer_rate(teacher, student, bundle.test, eps=eps, steps=a.steps, n=a.n,
                        device=a.device, per_sample=bool(a.out))
    res.update({"teacher": a.teacher, "student": a.student, "dataset": bundle.card.name})
    if a.out:
        io.write_json(a.out, res)
    print(json.dumps({k: v for k, v in res.items() if k != "per_sample"}, indent=2))
    return 0
