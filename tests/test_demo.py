"""``samplewise demo``: the quick demo end to end, its outputs, resume and the generated reading."""

import copy
import json
import time

import numpy as np
import pytest
import torch

from samplewise import io
from samplewise.cli import main
from samplewise.data import load_dataset
from samplewise.demo import demo_settings, run_demo
from samplewise.demo.report import reading
from samplewise.demo.settings import DEMO_METHODS, DEMO_SELECTORS, PLOTS
from samplewise.errors import SamplewiseError
from samplewise.evaluate import eval_slice, evaluate
from samplewise.models import load_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "quick"
    t0 = time.perf_counter()
    res = run_demo(out, quick=True, progress=False)
    return out, res, time.perf_counter() - t0


def _outputs(out):
    return [out / "results.json", out / "report.md", *(out / p for p in PLOTS.values()),
            *(out / f"coreset-{n}" / "ladder.json" for n in ("full", *DEMO_SELECTORS))]


def _clean_acc(run_dir, test, n) -> float:
    """Clean accuracy of a run's model on the evaluation slice, by hand (no attack code)."""
    data = eval_slice(test, n)
    with torch.no_grad():
        pred = load_model(run_dir)(data.x.float() / 255).argmax(1)
    return (pred == data.y).float().mean().item()


def _last_tas(run_dir) -> float:
    """The last epoch's TAS: the mean of that epoch's per-sample transfer flags."""
    return float(io.np_load(run_dir / "transfer.npz")["transfer"][:, -1].mean())


def test_report_has_both_tables_and_every_method(demo):
    out, res, _ = demo
    text = (out / "report.md").read_text()
    assert ("| training data (standard, mlp) | samples | clean acc | PGD-2 ε=0.05 | PGD-2 ε=0.1 | "
            "PGD-2 ε=0.2 |") in text
    assert "| model | training | clean acc | PGD-2 acc | TAS (last epoch) |" in text
    for name in (*DEMO_SELECTORS, *DEMO_METHODS, "full training set", "teacher",
                 "pgd-at, no teacher"):
        assert name in text
    for png in PLOTS.values():
        assert f"]({png})" in text
    assert "What this shows and what it does not" in text and "one seed" in text
    assert "docs/results.md §0, §5, §6" in text and "docs/results.md §0, §4" in text
    assert "--quick" in text and res["tables"]["coreset"] in text
    assert res["tables"]["distillation"] in text


def test_results_json_structure(demo):
    out, res, _ = demo
    r = json.loads((out / "results.json").read_text())
    assert r["format"] == "samplewise.demo/1" and r["dataset"] == "digits" and r["quick"] is True
    assert r["eval"]["attack"] == "pgd" and r["eval"]["eps"] == pytest.approx(0.2)
    assert r["eval"]["n"] == 50 and r["eval"]["steps"] == 2
    assert list(r["coreset"]["methods"]) == ["full", *DEMO_SELECTORS]
    assert list(r["distillation"]["methods"]) == list(DEMO_METHODS)
    rows = [*r["coreset"]["methods"].values(), r["coreset"]["reference_standard"],
            *r["distillation"]["methods"].values(), r["distillation"]["teacher"],
            r["distillation"]["student_alone"]]
    test = load_dataset("digits").test
    for row in rows:  # each row's numbers are its own stage's model, recomputed
        assert row["clean_acc"] == pytest.approx(_clean_acc(out / row["run"], test, r["eval"]["n"]))
        again = evaluate(load_model(out / row["run"]), test, attack="pgd", eps=r["eval"]["eps"],
                         alpha=r["eval"]["alpha"], steps=r["eval"]["steps"], n=r["eval"]["n"],
                         seed=r["eval"]["seed"])
        assert row["robust_acc"] == pytest.approx(again["robust_acc"]), row["run"]
    for m, row in r["distillation"]["methods"].items():
        assert row["objective"] == m and row["tas"] == pytest.approx(_last_tas(out / row["run"]))
    n = r["coreset"]["methods"]["full"]["n_train"]
    k = int(np.ceil(round(0.3 * n, 6)))  # the default fraction, 30%
    assert r["coreset"]["fraction"] == 0.3 and k == 405
    for name in DEMO_SELECTORS:
        assert r["coreset"]["methods"][name]["n_train"] == k
        assert sum(r["coreset"]["methods"][name]["class_histogram"].values()) == k
    # every coreset arm and the full-data reference: the same standard training
    assert r["coreset"]["objective"] == "standard" and r["coreset"]["radii"] == [0.05, 0.1, 0.2]
    for row in r["coreset"]["methods"].values():
        assert row["objective"] == "standard" and row["epochs"] == 2 and row["model"] == "mlp"
        assert [e["eps"] for e in row["ladder"]] == [0.05, 0.1, 0.2]
        assert [e["alpha"] for e in row["ladder"]] == pytest.approx([0.0125, 0.025, 0.05])
        assert row["ladder"][-1]["robust_acc"] == row["robust_acc"]  # the card's ε: result.json
    assert set(r["reading"]) == {"coreset", "distillation", "does_not"}
    assert r["seconds"] == pytest.approx(sum(s["seconds"] for s in r["stages"]), abs=0.2)
    # each stage is its own run directory, distillation students name the demo's teacher
    for stage in r["stages"]:
        assert (out / stage["name"] / "result.json").is_file()
    cfg = (out / "distill-saad" / "config.yaml").read_text()
    assert "teacher:" in cfg and str(out / "teacher") in cfg


def test_ladder_equals_an_independent_evaluation(demo):
    """The ladder of every coreset arm at ε = 0.1 is PGD-2 with step ε/4 on the demo's slice."""
    out, _, _ = demo
    r = json.loads((out / "results.json").read_text())
    test, n, seed = load_dataset("digits").test, r["eval"]["n"], r["settings"]["seed"]
    for name, row in r["coreset"]["methods"].items():
        again = evaluate(load_model(out / row["run"]), test, attack="pgd", eps=0.1, alpha=0.025,
                         steps=2, n=n, seed=seed)
        assert row["ladder"][1] == {"eps": 0.1, "alpha": 0.025, "steps": 2,
                                    "robust_acc": pytest.approx(again["robust_acc"])}, name
        assert row["clean_acc"] == pytest.approx(again["clean_acc"])


def test_resume_reads_the_ladder_cache(demo):
    """A resumed demo takes each radius from ``<stage>/ladder.json`` instead of attacking."""
    out, _, _ = demo
    path = out / "coreset-random" / "ladder.json"
    saved = path.read_bytes()
    planted = json.loads(saved)
    planted["radii"]["0.05"]["robust_acc"] = 0.777
    path.write_text(json.dumps(planted))
    try:
        res = run_demo(out, quick=True, resume=True, progress=False)
        assert res["coreset"]["methods"]["random"]["ladder"][0]["robust_acc"] == 0.777
        assert "| random 30% (uniform) | 405 |" in res["tables"]["coreset"]
        assert "77.7%" in res["tables"]["coreset"]
    finally:
        path.write_bytes(saved)
        run_demo(out, quick=True, resume=True, progress=False)


def test_plots_are_valid_pngs(demo):
    import matplotlib.image as mpimg
    out, _, _ = demo
    for name in PLOTS.values():
        path = out / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 500


def test_resume_from_the_cli_is_fast_and_changes_nothing(demo, capsys):
    out, res, first = demo
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in _outputs(out)}
    t0 = time.perf_counter()
    assert main(["-q", "demo", "--quick", "--resume", "--no-progress", "--out", str(out)]) == 0
    took = time.perf_counter() - t0
    assert took < max(5.0, first / 2), (took, first)
    for p, (mtime, data) in before.items():
        assert p.read_bytes() == data and p.stat().st_mtime_ns == mtime, p
    printed = capsys.readouterr().out
    assert res["tables"]["coreset"] in printed and res["tables"]["distillation"] in printed


def test_a_used_directory_needs_resume_and_the_same_settings(demo):
    out, _, _ = demo
    with pytest.raises(SamplewiseError, match="already holds a demo; pass --resume"):
        run_demo(out, quick=True, progress=False)
    other = demo_settings("digits", quick=True, fraction=0.5)
    with pytest.raises(SamplewiseError, match="other settings \\(fraction\\)"):
        run_demo(out, resume=True, settings=other, progress=False)


def test_resume_reruns_only_an_unfinished_stage(demo):
    out, _, _ = demo
    keep = {n: (out / n / "result.json").stat().st_mtime_ns for n in ("coreset-full", "teacher")}
    for name in ("result.json", "model.pt", "demo_stage.json"):
        (out / "distill-rslad" / name).unlink()
    res = run_demo(out, quick=True, resume=True, progress=False)
    assert (out / "distill-rslad" / "result.json").is_file()
    assert res["distillation"]["methods"]["rslad"]["tas"] == pytest.approx(
        _last_tas(out / "distill-rslad"))
    for n, mtime in keep.items():
        assert (out / n / "result.json").stat().st_mtime_ns == mtime


def test_missing_fashion_mnist_names_the_apt_package(tmp_path, monkeypatch):
    import samplewise.data.datasets as ds
    monkeypatch.setattr(ds, "FMNIST_DIR", tmp_path / "absent")
    with pytest.raises(SamplewiseError, match="apt-get install dataset-fashion-mnist"):
        run_demo(tmp_path / "out", dataset="fashion-mnist", quick=True, progress=False,
                 data_root=str(tmp_path / "data"))
    assert not (tmp_path / "out").exists()


def test_unknown_dataset_is_refused(tmp_path):
    with pytest.raises(SamplewiseError, match="digits or fashion-mnist"):
        run_demo(tmp_path / "out", dataset="cifar10", progress=False)


def test_reading_follows_the_numbers(demo):
    _, res, _ = demo
    r = copy.deepcopy({k: v for k, v in res.items() if k not in ("tables", "paths")})
    r["quick"] = False
    r["eval"]["n"] = 1000
    m = r["coreset"]["methods"]

    def ladder(row, clean, *accs):  # planted accuracies at ε = 0.05, 0.1, 0.2 (the card's)
        row.update(clean_acc=clean, robust_acc=accs[-1])
        for e, a in zip(row["ladder"], accs):
            e["robust_acc"] = a

    ladder(m["full"], 0.98, 0.88, 0.53, 0.01)
    ladder(m["easycore"], 0.80, 0.66, 0.46, 0.10)
    ladder(m["random"], 0.95, 0.84, 0.50, 0.01)
    ladder(m["el2n"], 0.88, 0.64, 0.29, 0.004)
    text = reading(r)["coreset"]
    assert "standard training (no attack) of mlp for 2 epochs" in text
    assert "on the full training set this gave 88.0%, 53.0%, 1.0% (clean 98.0%)" in text
    # noise = 2 sqrt(2 p (1 - p) / 1000) at the pair's mean p (3.9, 4.3, 4.5, 2.0 points)
    assert ("At ε = 0.05 the PGD-2 order was random 84.0% > easycore 66.0% > el2n 64.0% "
            "(full data 88.0%): EasyCore 18.0 points below random (noise ≈3.9); EasyCore and "
            "EL2N within noise (+2.0, noise ≈4.3).") in text
    assert "EasyCore and random within noise (-4.0, noise ≈4.5)" in text
    assert "order was random 50.0% > easycore 46.0% > el2n 29.0%" in text
    assert ("At ε = 0.2 (the card's ε) the PGD-2 order was easycore 10.0% > random 1.0% > "
            "el2n 0.4%") in text and "EasyCore 9.0 points above random (noise ≈2.0)" in text
    assert ("So in this run EasyCore was ahead of random at ε = 0.2; behind random at ε = 0.05; "
            "within the noise of random at ε = 0.1 ") in text
    assert "EasyCore was 15.0 points below random (80.0% vs 95.0%)" in text
    m["el2n"]["ladder"][1]["robust_acc"] = 0.46
    assert "order was random 50.0% > easycore 46.0% = el2n 46.0%" in reading(r)["coreset"]
    assert "docs/results.md §0, §5, §6" in text and "That is why this demo trains" in text
    # an adversarial objective (a --settings override) is first checked against the scoring run
    r["coreset"]["objective"] = "pgd-at"
    r["coreset"]["reference_standard"].update(clean_acc=0.97, robust_acc=0.008)
    text = reading(r)["coreset"]
    assert "pgd-at reached 1.0% PGD-2 accuracy at ε = 0.2, against 0.8%" in text
    assert "did not clearly raise robustness" in text and "That is why" not in text
    r["coreset"]["methods"]["full"]["robust_acc"] = 0.55
    assert "clearly raised robustness, so" in reading(r)["coreset"]
    d = r["distillation"]["methods"]
    for k, (rob, tas) in zip(DEMO_METHODS, [(0.40, 0.9), (0.42, 0.5), (0.47, 0.2)]):
        d[k].update(robust_acc=rob, tas=tas)
    text = reading(r)["distillation"]
    assert "most robust distilled student was saad" in text
    assert "ordered the methods ard > rslad > saad" in text and "was not the most robust" in text
    assert "SAAD was 5.0 points above the best baseline (rslad)" in text
    d["saad"]["tas"] = 0.95
    assert "the highest-TAS method was the most robust" in reading(r)["distillation"]
    for k, rob in zip(DEMO_METHODS, (0.45, 0.45, 0.46)):
        d[k]["robust_acc"] = rob
    text = reading(r)["distillation"]
    assert "all lay within 1.0 points" in text and "highest-TAS method" not in text
    assert "SAAD and the best baseline (ard) were within 1.0 points" in text
    assert "docs/results.md §0, §4" in text
    assert "--quick" not in reading(r)["does_not"] and "1000 test images" in reading(r)["does_not"]
    assert np.isfinite(res["seconds"])


def test_report_shows_the_atlas_of_the_scoring_run(demo):
    out, res, _ = demo
    atlas = json.loads((out / "results.json").read_text())["atlas"]
    text = (out / "report.md").read_text()
    for key in ("report", "grid", "datamap"):
        assert (out / atlas[key]).is_file() and f"({atlas[key]})" in text
    shown = json.loads((out / "atlas" / "atlas.json").read_text())
    assert shown["score"] == "aign" and len(shown["grid"]) == 10
    rho = atlas["reading"]["spearman"]["aign_confidence"]["rho"]
    assert f"Spearman AIGN vs confidence {rho:+.2f}" in text


def test_a_bad_eps_ladder_is_refused(tmp_path):
    for bad in ([0.1, 0.05], [], [0.0, 0.1], "0.1"):
        with pytest.raises(SamplewiseError, match="eps_ladder must be a non-empty list"):
            demo_settings("digits", quick=True, eps_ladder=bad)
    assert demo_settings("digits", eps_ladder=[0.05, 0.1]).eps_ladder == (0.05, 0.1)
    s = demo_settings("digits", quick=True, eps_ladder=[0.05, 0.2])  # the card's ε is 0.2
    with pytest.raises(SamplewiseError, match="must stay below the digits card's ε = 0.2"):
        run_demo(tmp_path / "out", settings=s, progress=False)
    assert not (tmp_path / "out").exists()
