"""The subset file's one writer and one reader (samplewise.formats.subset).

Error cases that need a dataset (range, training split) are in test_data.py; the checksum of a
pair left mismatched by a kill is in test_reliability.py.
"""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from samplewise.errors import SamplewiseError
from samplewise.formats.subset import FORMAT, checksum, read_subset, write_subset


def fake_bundle(n: int = 20, fingerprint: str = "f" * 16):
    """What read_subset uses of a DataBundle, and nothing else."""
    return SimpleNamespace(index_size=n, fingerprint=fingerprint, card=SimpleNamespace(name="toy"),
                           train=SimpleNamespace(index=torch.arange(n)))


def test_written_subset_reads_back_sorted_with_its_summary(tmp_path):
    npy, js = write_subset(tmp_path / "s.npy", [7, 2, 11], {"selector": "x", "size": 99})
    assert js == tmp_path / "s.json"
    back = read_subset(npy, fake_bundle())
    assert back.indices.dtype == np.int64 and back.indices.tolist() == [2, 7, 11]
    expected = hashlib.sha256(np.array([2, 7, 11], np.int64).tobytes()).hexdigest()[:16]
    # the writer's own fields win over the summary's
    assert back.summary == {"format": FORMAT, "selector": "x", "size": 3, "checksum": expected}
    assert json.loads(js.read_text()) == back.summary
    assert checksum([11, 2, 7]) == expected


def test_reader_checks_the_summary_and_the_dataset(tmp_path):
    write_subset(tmp_path / "s.npy", [1, 2], {"fingerprint": "a" * 16, "dataset": "toy"})
    assert read_subset(tmp_path / "s.npy").summary["fingerprint"] == "a" * 16  # no bundle
    with pytest.raises(SamplewiseError, match="fingerprint aaaa"):
        read_subset(tmp_path / "s.npy", fake_bundle())
    np.save(tmp_path / "s.npy", np.array([1, 3]))  # the indices changed, the summary did not
    with pytest.raises(SamplewiseError, match="does not match its summary"):
        read_subset(tmp_path / "s.npy")
    np.save(tmp_path / "neg.npy", np.array([-2, 1]))
    with pytest.raises(SamplewiseError, match="out of range"):
        read_subset(tmp_path / "neg.npy")
    with pytest.raises(SamplewiseError, match="distinct"):
        write_subset(tmp_path / "dup.npy", [3, 3])
    assert not (tmp_path / "dup.npy").exists()
