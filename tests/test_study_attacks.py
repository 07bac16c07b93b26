"""The studies' eval.attacks: any registered attack evaluated per cell at the cell's threat model,
cached per attack in attacks.json, one table column per attack; a tiny study on digits."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import sys
from pathlib import Path

import pytest
import torch
import yaml

from samplewise.attacks import ATTACKS
from samplewise.data import load_dataset
from samplewise.errors import SamplewiseError
from samplewise.evaluate import evaluate
from samplewise.models import load_model
from samplewise.studies import distill, grid
from samplewise.studies.coreset_study import load_coreset_config, run_coreset_study

N, STEPS = 80, 3
TOY = "toy-signnoise"


def signnoise(model, x, y, *, eps, generator=None):
    """A throwaway attack: a random ±eps corner of the L∞ ball (uses the evaluation's RNG)."""
    noise = torch.randint(0, 2, x.shape, generator=generator, device="cpu").to(x) * 2 - 1
    return (x + eps * noise).clamp(0, 1)


@pytest.fixture(scope="module", autouse=True)
def toy_attack():
    ATTACKS.register(TOY, help="test only")(signnoise)
    yield TOY
    ATTACKS.unregister(TOY)


def config(attacks) -> dict:
    return {"study": "coreset",
            "base": {"dataset": "digits", "model": "mlp", "epochs": 2, "batch_size": 64,
                     "lr": 0.05, "schedule": "constant", "monitor_steps": 0, "progress": False,
                     "eps": 0.1},
            "selection": {"full_data": False},
            "grid": {"selectors": ["random"], "fractions": [0.5], "objectives": ["standard"]},
            "seeds": [0, 1], "eval": {"n": N, "pgd_steps": STEPS, "attacks": list(attacks)}}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("attacks")
    return out, run_coreset_study(config([TOY, "pgd"]), out)


def _rows(out):
    with open(out / "results.csv") as fh:
        return list(csv.DictReader(fh))


def test_attack_column_equals_a_direct_evaluation(study):
    out, summary = study
    assert summary["cells_finished"] == 2 and not summary["failed"]
    rows = _rows(out)
    test = load_dataset("digits").test
    for row in rows:
        cell = out / "cells" / row["cell"]
        result = json.loads((cell / "result.json").read_text())
        assert (result["eval"]["eps"], result["eval"]["alpha"]) == (0.1, 0.025)
        direct = evaluate(load_model(cell), test, attack=TOY, eps=0.1, n=N, seed=0)
        assert float(row[f"robust_acc@{TOY}"]) == direct["robust_acc"]
        # the toy attack does something on this model, and less than PGD
        assert float(row["pgd_acc"]) < direct["robust_acc"] <= float(row["clean_acc"])
        # PGD through eval.attacks is the cell's own final evaluation: same threat model
        assert float(row["robust_acc@pgd"]) == float(row["pgd_acc"])
        saved = json.loads((cell / grid.ATTACKS_FILE).read_text())
        assert list(saved["attacks"]) == [TOY, "pgd"]
        assert saved["attacks"][TOY]["eps"] == 0.1 and saved["attacks"]["pgd"]["steps"] == STEPS
    md = (out / "results.md").read_text()
    head = next(line for line in md.splitlines() if line.startswith("| selector"))
    assert head.split(" | ")[-2:] == [TOY, "pgd |"]
    values = [float(r[f"robust_acc@{TOY}"]) for r in rows]
    want = f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"
    line = next(line for line in md.splitlines() if line.startswith("| random"))
    assert line.strip(" |").split(" | ")[-2] == want
    data = json.loads((out / "results.json").read_text())
    assert data["summary"][0][f"robust_acc@{TOY}_n"] == 2


def test_unknown_attack_is_one_error_line_listing_the_registry():
    with pytest.raises(SamplewiseError) as exc:
        load_coreset_config(config([TOY, "nosuch"]))
    text = str(exc.value)
    assert "\n" not in text and "unknown attack 'nosuch'" in text
    assert all(name in text for name in ATTACKS.names())       # the registry's own list
    with pytest.raises(SamplewiseError, match="distinct"):
        load_coreset_config(config([TOY, TOY]))


def test_rerun_computes_only_the_newly_listed_attack(study, tmp_path, monkeypatch):
    out = tmp_path / "study"
    shutil.copytree(study[0], out)
    before = {p.name: json.loads((p / grid.ATTACKS_FILE).read_text())
              for p in (out / "cells").iterdir()}
    called = []
    module = sys.modules["samplewise.evaluate"]  # the name samplewise.evaluate is the function
    real = module.evaluate

    def spy(*args, **kwargs):
        called.append(kwargs["attack"])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "evaluate", spy)
    summary = run_coreset_study(config([TOY, "pgd", "fgsm"]), out)
    assert called == ["fgsm", "fgsm"] and not summary["failed"]
    for p in (out / "cells").iterdir():
        saved = json.loads((p / grid.ATTACKS_FILE).read_text())["attacks"]
        assert {k: saved[k] for k in (TOY, "pgd")} == before[p.name]["attacks"]
        row = next(r for r in _rows(out) if r["cell"] == p.name)
        assert float(row["robust_acc@fgsm"]) == saved["fgsm"]["robust_acc"]
    # a cache made with other settings is refused up front, with one clear error
    changed = config([TOY])
    changed["eval"]["batch_size"] = 32
    with pytest.raises(SamplewiseError, match="attacks.json was computed with") as exc:
        run_coreset_study(changed, out)
    assert "\n" not in str(exc.value)



def test_distill_study_reports_the_attacks_too(tmp_path):
    """The distillation study runs its cells through the same runner: one column per attack."""
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" /
                          "study-distill-digits.yaml").read_text())
    raw["teachers"] = [t for t in raw["teachers"] if t["name"] == "mlp-trades"]
    raw["grid"] = {"teachers": ["mlp-trades"], "methods": ["ard"]}
    raw["seeds"] = [0, 1]
    raw["eval"] = {"n": 40, "pgd_steps": 2, "attacks": [TOY, "pgd"]}
    out = tmp_path / "distill"
    res = distill.run_distill_study(raw, out)
    assert res["cells_finished"] == 2 and not res["failed"]
    rows = _rows(out)
    test = load_dataset("digits").test
    for row in rows:
        cell = out / "cells" / row["cell"]
        eps = json.loads((cell / "result.json").read_text())["eval"]["eps"]
        direct = evaluate(load_model(cell), test, attack=TOY, eps=eps, n=40, seed=0)
        assert float(row[f"robust_acc@{TOY}"]) == direct["robust_acc"]
        assert float(row["robust_acc@pgd"]) == float(row["pgd_acc"])
    head = next(line for line in (out / "results.md").read_text().splitlines()
                if line.startswith("| teacher"))
    assert f"| PGD-2 | {TOY} | pgd | TAS train |" in head
