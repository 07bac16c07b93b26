"""The coreset study's ε ladder (eval.eps_ladder): PGD accuracy at several radii per cell, cached
per radius, in the tables and plots; a tiny standard-training study on digits."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import sys
from pathlib import Path

import pytest
import yaml

from samplewise.attacks import pgd
from samplewise.data import load_dataset
from samplewise.errors import SamplewiseError
from samplewise.evaluate import eval_slice, evaluate, predict
from samplewise.models import load_model
from samplewise.runinfo import derived_generator
from samplewise.studies import grid
from samplewise.studies.coreset_study import load_coreset_config, run_coreset_study

LADDER = [0.05, 0.1, 0.2]
N, STEPS = 120, 5


def ladder_config(**eval_changes) -> dict:
    ev = {"n": N, "pgd_steps": STEPS, "eps_ladder": list(LADDER), "autoattack": True,
          "autoattack_n": 12, "autoattack_version": "custom", "autoattack_attacks": ["apgd-ce"],
          "autoattack_seeds": [0], "autoattack_eps": 0.1}
    ev.update(eval_changes)
    return {"study": "coreset",
            "base": {"dataset": "digits", "model": "mlp", "epochs": 2, "batch_size": 64,
                     "lr": 0.05, "schedule": "constant", "monitor_steps": 0, "progress": False},
            "scoring": {"epochs": 2},
            "selection": {"full_data": True},
            "grid": {"selectors": ["easycore", "random"], "fractions": [0.3, 0.6],
                     "objectives": ["standard"]},
            "seeds": [0, 1], "eval": ev}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("ladder")
    config = out.parent / "ladder.yaml"
    config.write_text(yaml.safe_dump(ladder_config()))
    return out, config, run_coreset_study(config, out)


def _ladder(path: Path) -> dict[float, float]:
    saved = json.loads((path / grid.LADDER_FILE).read_text())
    return {float(r): res["robust_acc"] for r, res in saved["radii"].items()}


def test_ladder_parity_with_an_independent_evaluation(study):
    """Each radius's accuracy equals samplewise.evaluate on the saved model, and a hand-made
    PGD (same slice, same generator seed, step ε/4) on the same samples."""
    out, _, summary = study
    assert summary["cells_finished"] == 10 and not summary["failed"]
    cell = out / "cells" / "easycore-f0.3-standard-s1"
    model = load_model(cell)
    test = load_dataset("digits").test
    ladder = _ladder(cell)
    assert sorted(ladder) == LADDER
    # at the card's radius (0.2, step 0.05 = ε/4) the ladder repeats the run's own final PGD
    result = json.loads((cell / "result.json").read_text())
    assert (result["eval"]["eps"], result["eval"]["alpha"]) == (0.2, 0.05)
    assert ladder[0.2] == result["robust_acc"]
    for eps in LADDER:
        res = evaluate(model, test, attack="pgd", eps=eps, alpha=eps / 4, steps=STEPS, n=N,
                       seed=0)
        assert ladder[eps] == res["robust_acc"]
        data = eval_slice(test, N)          # N <= the attack batch: one batch, one generator
        x, y = data.x.float() / 255, data.y
        x_adv = pgd(model, x, y, eps=eps, alpha=eps / 4, steps=STEPS,
                    generator=derived_generator(0, 7919, device="cpu"))
        by_hand = ((predict(model, x_adv) == y) & (predict(model, x) == y)).float().mean().item()
        assert ladder[eps] == pytest.approx(by_hand, abs=1e-12)


def test_robust_accuracy_does_not_rise_with_eps(study):
    out, _, _ = study
    for path in sorted((out / "cells").iterdir()):
        acc = [acc for _, acc in sorted(_ladder(path).items())]
        clean = json.loads((path / "result.json").read_text())["clean_acc"]
        assert clean >= acc[0] and all(a >= b for a, b in zip(acc, acc[1:])), (path.name, acc)
    # and the ladder is not flat: the radii matter for this model
    assert acc[0] > acc[-1]


def test_tables_have_one_column_per_radius(study):
    out, _, summary = study
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    columns = [f"pgd_acc@{r:g}" for r in LADDER]
    assert list(rows[0])[6:10] == ["pgd_acc", *columns]
    for row in rows:
        ladder = _ladder(out / "cells" / row["cell"])
        assert [float(row[c]) for c in columns] == [ladder[r] for r in LADDER]
    md = (out / "results.md").read_text()
    assert "ε = 0.05, 0.1, 0.2 (step ε/4 each)" in md
    assert "AutoAttack (apgd-ce) at ε = 0.1 on 12 (seed 0 only)" in md
    head = next(line for line in md.splitlines() if line.startswith("| selector"))
    assert head.split(" | ")[-4:] == [f"PGD-{STEPS} ε={r:g}" for r in LADDER] + ["AutoAttack |"]
    for line in md.splitlines():
        if not line.startswith("| random | 0.6"):
            continue
        values = [[float(r[c]) for r in rows if r["selector"] == "random"
                   and r["fraction"] == "0.6"] for c in columns]
        want = [f"{100 * statistics.mean(v):.2f} ± {100 * statistics.stdev(v):.2f}"
                for v in values]
        assert line.strip(" |").split(" | ")[8:11] == want
        assert line.strip(" |").split(" | ")[1:2] == ["0.6"] and "| 2 |" in line   # n seeds
        break
    else:
        pytest.fail("no random 0.6 row")
    data = json.loads((out / "results.json").read_text())
    assert data["summary"][0]["pgd_acc@0.1_n"] == 2
    aa = json.loads((out / "cells" / "random-f0.6-standard-s0" / "autoattack.json").read_text())
    assert aa["eps"] == 0.1 and aa["n"] == 12
    assert [Path(p).name for p in summary["results"]][-1] == "comparison.md"
    comparison = (out / "comparison.md").read_text()
    for label in ("clean accuracy", "PGD-5 at ε = 0.05", "PGD-5 at ε = 0.1", "PGD-5 at ε = 0.2"):
        assert f"## {label}" in comparison
    assert "AutoAttack" not in comparison          # seed 0 only: nothing to test
    names = [Path(p).name for p in summary["plots"]]
    assert names[-3:] == ["robust_vs_eps.png", "robust_vs_fraction_middle_eps.png",
                          "robust_vs_clean.png"]
    for name in names:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_rerun_with_an_extra_radius_computes_only_that_radius(study, tmp_path, monkeypatch):
    src, _, _ = study
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    before = {p.name: _ladder(p) for p in (out / "cells").iterdir()}
    calls = []
    evaluate_module = sys.modules["samplewise.evaluate"]   # the package exports the function
    real = evaluate_module.evaluate

    def counting(model, split, **kw):
        calls.append((kw["attack"], kw["eps"]))
        return real(model, split, **kw)

    monkeypatch.setattr(evaluate_module, "evaluate", counting)
    monkeypatch.setattr("samplewise.runs.run_training", lambda *a, **k: pytest.fail("trained"))
    config = tmp_path / "more.yaml"
    config.write_text(yaml.safe_dump(ladder_config(eps_ladder=[*LADDER, 0.3])))
    res = run_coreset_study(config, out)
    assert set(res["ran"].values()) == {"ladder"}
    assert calls == [("pgd", 0.3)] * 10
    for path in (out / "cells").iterdir():
        after = _ladder(path)
        assert {r: after[r] for r in LADDER} == before[path.name] and 0.3 in after
        assert after[0.3] <= after[0.2]
    with open(out / "results.csv") as fh:
        assert "pgd_acc@0.3" in next(csv.reader(fh))
    calls.clear()
    assert set(run_coreset_study(config, out)["ran"].values()) == {"already finished"}
    assert calls == []
    # a cached AutoAttack at another radius, or a ladder made with other settings, is refused
    moved = tmp_path / "moved.yaml"
    moved.write_text(yaml.safe_dump(ladder_config(autoattack_eps=0.2)))
    with pytest.raises(SamplewiseError, match="AutoAttack at eps=0.2"):
        run_coreset_study(moved, out)
    steps = tmp_path / "steps.yaml"
    steps.write_text(yaml.safe_dump(ladder_config(autoattack=False, pgd_steps=STEPS + 1)))
    with pytest.raises(SamplewiseError):
        run_coreset_study(steps, out)


def test_ladder_keys_are_checked():
    cfg = load_coreset_config(ladder_config(eps_ladder=["1/255", "2/255", 0.05],
                                            autoattack_eps=None))
    assert [r for _, r in cfg.eval.ladder()] == [1 / 255, 2 / 255, 0.05]
    assert cfg.eval.middle() == ("2/255", 2 / 255) and cfg.eval.autoattack_radius() == 2 / 255
    assert load_coreset_config(ladder_config(eps_ladder=None, autoattack_eps=None)) \
        .eval.autoattack_radius() is None
    for bad in ([0.1, 0.05], [0.1, 0.1], [], [0.0, 0.1], ["x/255"], ["1/0"], [True]):
        with pytest.raises(SamplewiseError, match="eps_ladder"):
            load_coreset_config(ladder_config(eps_ladder=bad))
    with pytest.raises(SamplewiseError, match="autoattack_eps"):
        load_coreset_config(ladder_config(autoattack_eps=-1))



CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name, dataset, ladder, aa_eps", [
    ("study-coreset-fmnist-standard.yaml", "fashion-mnist", [0.01, 0.02, 0.05], 0.02),
    ("study-coreset-cifar10-standard.yaml", "cifar10-jpeg", [1 / 255, 2 / 255, 4 / 255], 2 / 255)])
def test_standard_training_configs_follow_the_issue(name, dataset, ladder, aa_eps):
    """Issue 12 §3: standard objective, nine selectors (+ kcenter), fractions 0.1-0.7, three
    seeds, a ladder of three radii with AutoAttack at the middle one."""
    cfg = load_coreset_config(CONFIGS / name)
    assert cfg.base.dataset == dataset and cfg.base.train_size == 10000
    assert cfg.grid["objective"] == ("standard",) and cfg.seeds == (0, 1, 2)
    assert set(cfg.grid["selector"]) >= {"easycore", "random", "el2n", "grand", "forgetting",
                                         "aum", "ccs", "moderate", "hardcore"}
    assert cfg.raw["selection"]["options"]["ccs"] == {"score": "aum"}   # ccs as published
    assert cfg.grid["fraction"] == (0.1, 0.3, 0.5, 0.7)
    assert [r for _, r in cfg.eval.ladder()] == pytest.approx(ladder)
    assert cfg.eval.autoattack and cfg.eval.autoattack_radius() == pytest.approx(aa_eps)
    assert cfg.eval.middle()[1] == pytest.approx(aa_eps) and cfg.eval.n >= 1000
    assert cfg.sections["selection"].full_data and cfg.base.threads == 1


@pytest.mark.parametrize("name, epochs, selectors, fractions", [
    ("study-coreset-cifar10-at.yaml", 15,
     {"easycore", "random", "el2n", "ccs", "moderate", "hardcore"}, (0.3, 0.5)),
    ("study-coreset-fmnist-at-long.yaml", 10,
     {"easycore", "random", "el2n", "forgetting", "ccs", "moderate", "hardcore"}, (0.3, 0.5))])
def test_adversarial_training_configs_follow_the_issue(name, epochs, selectors, fractions):
    """Issue 12 §4: PGD-AT and TRADES, full data, three seeds, the same epochs on every cell."""
    cfg = load_coreset_config(CONFIGS / name)
    assert cfg.base.epochs >= epochs and cfg.base.budget == "epochs"
    assert set(cfg.grid["selector"]) == selectors and cfg.grid["fraction"] == fractions
    assert set(cfg.grid["objective"]) == {"pgd-at", "trades"} and cfg.seeds == (0, 1, 2)
    assert cfg.sections["selection"].full_data and cfg.eval.ladder() == []
