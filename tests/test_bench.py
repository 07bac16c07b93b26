"""``samplewise bench``: the JSON it writes has the promised shape (never its timings)."""

import argparse
import builtins
import json
import math

import pytest

from samplewise import bench
from samplewise.bench import core, runner
from samplewise.commands import bench as bench_cmd
from samplewise.errors import SamplewiseError

ROW_FIELDS = {"name", "ours", "reference", "ratio", "unit", "measure", "target", "status", "notes",
              "item"}
STATUSES = {"pass", "fail", "report", "skipped"}


def _namespace(**kw):
    """The parsed defaults of ``samplewise bench`` with ``kw`` set, as the CLI would pass them."""
    p = argparse.ArgumentParser()
    bench_cmd.add_arguments(p)
    return argparse.Namespace(**{**vars(p.parse_args([])), **kw})


def _positive_or_none(v):
    return v is None or (isinstance(v, (int, float)) and math.isfinite(v) and v > 0)


def _check_rows(rows):
    assert rows
    for r in rows:
        assert set(r) == ROW_FIELDS, r
        assert r["status"] in STATUSES, r
        assert isinstance(r["name"], str) and r["name"] and isinstance(r["notes"], str)
        assert _positive_or_none(r["ours"]) and _positive_or_none(r["reference"]), r
        assert _positive_or_none(r["ratio"]), r
        if r["ratio"] is None:  # no ratio: an absolute figure or a skip, and the note says which
            assert r["notes"], r
        if r["status"] == "skipped":
            assert r["notes"].startswith("skipped:"), r
        if r["target"] == "report":
            assert r["status"] in ("report", "skipped"), r
        else:
            assert r["target"].startswith((">=", "<=")), r
            assert r["status"] in ("pass", "fail", "skipped"), r


def test_quick_bench_writes_the_promised_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = bench_cmd.run(_namespace(quick=True, json=str(out), threads=1))
    assert code == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["format"] == core.FORMAT
    assert data["items"] == list(bench.ITEMS)
    for key in ("torch", "torch_threads", "cpu_count", "python", "torchattacks"):
        assert key in data["machine"]
    assert data["machine"]["torch_threads"] == 1
    assert data["plan"]["quick"] is True
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary left behind
    _check_rows(data["rows"])
    names = [r["name"] for r in data["rows"]]
    assert {r["item"] for r in data["rows"]} == set(bench.ITEMS)
    for expected in ("pgd-2 throughput", "pgd-at epoch", "efficiency standard", "efficiency pgd-at",
                     "efficiency trades", "aign online overhead", "aign checkpoint overhead",
                     "saad vs igdm epoch", "select easycore", "select ccs", "select kcenter",
                     "score matrix bytes"):
        assert expected in names
    kcenter = next(r for r in data["rows"] if r["name"] == "select kcenter")
    assert kcenter["status"] == "skipped" and "O(N k D)" in kcenter["notes"]
    for r in data["rows"]:
        if r["item"] != "selection" and r["status"] != "skipped":
            assert r["ratio"] is not None, r  # every side-by-side figure is a ratio
        assert r["name"] in printed


def test_rows_without_torchattacks_say_how_to_get_it(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_torchattacks(name, *args, **kw):
        if name == "torchattacks" or name.startswith("torchattacks."):
            raise ImportError("No module named 'torchattacks'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_torchattacks)
    data = bench.run_bench(quick=True, items="pgd,epoch", json_path=tmp_path / "b.json", threads=1)
    assert json.loads((tmp_path / "b.json").read_text())["rows"] == data["rows"]
    assert data["machine"]["torchattacks"] is None
    _check_rows(data["rows"])
    by_name = {r["name"]: r for r in data["rows"]}
    pgd_row = by_name["pgd-2 throughput"]
    assert pgd_row["status"] == "skipped" and pgd_row["ratio"] is None
    assert "torchattacks not installed" in pgd_row["notes"] and "samplewise[bench]" in pgd_row["notes"]
    epoch = by_name["pgd-at epoch"]  # the reference still runs, with its own PGD loop
    assert epoch["ratio"] is not None and "hand-written PGD" in epoch["notes"]


def test_growth_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "img" / "growth.png"
    data = bench.run_bench(quick=True, items="none", plot_path=png, threads=1,
                           growth_sizes=(64, 128), growth_steps=(0, 1))
    g = data["growth"]
    assert data["rows"] == []
    assert len(g["sizes"]) == len(g["size_seconds"]) == 2
    assert g["steps"] == [0, 1] and len(g["steps_seconds"]) == len(g["steps_ideal_seconds"]) == 2
    assert all(s > 0 for s in g["size_seconds"] + g["steps_seconds"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(png.parent.glob(".*.tmp"))


def test_items_and_settings_are_checked():
    assert runner.parse_items("selection, pgd") == ["pgd", "selection"]
    assert runner.parse_items("none") == [] and runner.parse_items(None) == list(bench.ITEMS)
    with pytest.raises(SamplewiseError, match="unknown bench item"):
        runner.parse_items("pgd,warp")
    with pytest.raises(SamplewiseError, match="unknown bench setting"):
        bench.make_plan(colour="red")
    with pytest.raises(SamplewiseError, match="threads"):
        bench.run_bench(quick=True, items="none", threads=0)


def test_row_status_follows_its_target():
    row = core.Row("r", 2.0, 1.0, 2.0, "s", "m", (">=", 1.5))
    assert row.status() == "pass" and row.to_dict()["target"] == ">= 1.5"
    assert core.Row("r", 1.0, 1.0, 1.2, "s", "m", ("<=", 1.05)).status() == "fail"
    assert core.Row("r", 0.4, None, None, "s", "m", ("<=", 1.0), absolute=True).status() == "pass"
    assert core.Row("r", 1.0, 1.0, 1.0, "s", "m", None).status() == "report"
    assert core.Row("r", None, None, None, "s", "m", (">=", 1.0), skipped=True).status() == "skipped"


def test_a_missing_device_is_one_clear_error():
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(SamplewiseError, match="CUDA is not available"):
        bench.run_bench(quick=True, items="pgd", device="cuda")
