"""Checks shared by the tests that stop a run and resume it (test_reliability, test_preemption)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from samplewise import io

#: result.json keys that measure time, not the run
TIMING = {"train_seconds", "epoch_seconds"}


def assert_same_run(a: Path, b: Path) -> None:
    """Run directories ``a`` and ``b`` hold the same run: equal weights, the same metrics lines
    (but their seconds) and the same result.json (but its timings)."""
    sa = io.torch_load(a / "model.pt")["state_dict"]
    sb = io.torch_load(b / "model.pt")["state_dict"]
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "weights differ"
    strip = lambda m: {k: v for k, v in m.items() if k != "seconds"}  # noqa: E731
    ma, mb = io.read_jsonl(a / "metrics.jsonl"), io.read_jsonl(b / "metrics.jsonl")
    assert [strip(m) for m in ma] == [strip(m) for m in mb] and len(ma) > 0
    ra = json.loads((a / "result.json").read_text())
    rb = json.loads((b / "result.json").read_text())
    assert {k: v for k, v in ra.items() if k not in TIMING} == \
           {k: v for k, v in rb.items() if k not in TIMING}
