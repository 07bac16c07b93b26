"""The score file format: exact round trip, and one clear error for every broken file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from samplewise.errors import SamplewiseError
from samplewise.hardness import FORMAT, SCORE_NAMES, ScoreTable

FP = "0123456789abcdef"


def make_table(n: int = 50, epochs: int = 4, seed: int = 0) -> ScoreTable:
    rng = np.random.default_rng(seed)
    return ScoreTable(
        index=np.sort(rng.choice(3 * n, size=n, replace=False)),
        labels=rng.integers(0, 5, n),
        scores={name: rng.random(n).astype(np.float32) for name in SCORE_NAMES},
        aign_per_epoch=rng.random((n, epochs)).astype(np.float16),
        features=rng.normal(size=(n, 6)).astype(np.float16),
        meta={"dataset": "toy", "fingerprint": FP, "num_train": 3 * n, "model": "mlp",
              "epochs": epochs, "seed": seed, "mode": "eval", "p": 2,
              "tracked_epochs": list(range(1, epochs + 1))},
    )


def raw_arrays(table: ScoreTable, **changes) -> dict:
    """The arrays a score file of ``table`` holds, with ``changes`` applied (None deletes)."""
    arrays = {"index": table.index, "labels": table.labels, **table.scores,
              "aign_per_epoch": table.aign_per_epoch, "features": table.features,
              "meta": np.array(json.dumps({**table.meta, "format": FORMAT}))}
    arrays.update(changes)
    return {k: v for k, v in arrays.items() if v is not None}


def write_raw(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path


def test_roundtrip_is_exact(tmp_path):
    table = make_table()
    table.save(tmp_path / "s.npz")
    back = ScoreTable.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.index, table.index)
    np.testing.assert_array_equal(back.labels, table.labels)
    assert back.names() == list(SCORE_NAMES)
    for name in SCORE_NAMES:
        assert back.get(name).dtype == np.float32
        np.testing.assert_array_equal(back.get(name), table.get(name))
    assert back.aign_per_epoch.dtype == np.float16 and back.features.dtype == np.float16
    np.testing.assert_array_equal(back.aign_per_epoch, table.aign_per_epoch)
    np.testing.assert_array_equal(back.features, table.features)
    assert back.meta["format"] == FORMAT and "samplewise_version" in back.meta
    assert {k: back.meta[k] for k in table.meta} == table.meta
    assert back.source == str(tmp_path / "s.npz") and len(back) == 50
    assert back.index.dtype == np.int64 and back.labels.dtype == np.int64


def test_minimal_table_and_coercion(tmp_path):
    table = ScoreTable(index=[3, 1], labels=np.array([0, 1], dtype=np.uint8),
                       scores={"el2n": [0.5, 0.25]}, features=np.ones((2, 3)))
    assert table.get("el2n").dtype == np.float32 and table.index.dtype == np.int64
    table.save(tmp_path / "m.npz")
    back = ScoreTable.load(tmp_path / "m.npz")
    assert back.aign_per_epoch is None and back.features.dtype == np.float16
    np.testing.assert_array_equal(back.get("el2n"), [0.5, 0.25])


def test_accessors():
    table = make_table(n=5)
    with pytest.raises(SamplewiseError, match="no score 'nope'; present: aign, el2n"):
        table.get("nope")
    cols = table.as_dict()
    assert list(cols) == ["index", "label", *SCORE_NAMES]
    rows = table.to_rows()
    assert len(rows) == 5 and rows[2]["index"] == table.index[2]
    assert rows[2]["aign"] == pytest.approx(float(table.get("aign")[2]))
    s = table.summary()["el2n"]
    v = table.get("el2n").astype(np.float64)
    assert s == pytest.approx({"mean": v.mean(), "std": v.std(), "min": v.min(), "max": v.max()})
    sub = table.take([4, 0])
    np.testing.assert_array_equal(sub.index, table.index[[4, 0]])
    np.testing.assert_array_equal(sub.features, table.features[[4, 0]])


def test_aign_window_is_the_hand_mean():
    table = make_table(n=20, epochs=5)          # tracked epochs 1..5
    a = table.aign_per_epoch.astype(np.float64)
    np.testing.assert_allclose(table.aign_window(2, 4), a[:, 1:3].mean(1), rtol=1e-6)
    np.testing.assert_allclose(table.aign_window(None, 2), a[:, 0], rtol=1e-6)
    np.testing.assert_allclose(table.aign_window(), a.mean(1), rtol=1e-6)
    with pytest.raises(SamplewiseError, match="no tracked epoch in the window"):
        table.aign_window(7, 9)
    plain = ScoreTable(table.index, table.labels, aign_per_epoch=table.aign_per_epoch)
    np.testing.assert_allclose(plain.aign_window(0, 2), a[:, :2].mean(1), rtol=1e-6)
    with pytest.raises(SamplewiseError, match="no per-epoch AIGN"):
        ScoreTable(table.index, table.labels).aign_window(0, 1)


def test_check_dataset(tmp_path):
    table = make_table()
    table.save(tmp_path / "s.npz")
    back = ScoreTable.load(tmp_path / "s.npz")
    back.check_dataset(FP, "toy")
    with pytest.raises(SamplewiseError) as err:
        back.check_dataset("ffffffffffffffff", "cifar10")
    msg = str(err.value)
    assert "s.npz was computed on dataset toy (fingerprint 0123456789abcdef)" in msg
    assert "this run uses cifar10 (fingerprint ffffffffffffffff)" in msg and "\n" not in msg


@pytest.mark.parametrize("change, match", [
    ({"meta": np.array(json.dumps({"format": "other/2"}))}, "unsupported format"),
    ({"meta": None}, "no 'meta' array"),
    ({"meta": np.array("{not json")}, "not valid JSON"),
    ({"meta": np.array([1, 2])}, "0-d unicode"),
    ({"labels": np.zeros(49, dtype=np.int64)}, "'labels' has length 49"),
    ({"el2n": np.zeros(51, dtype=np.float32)}, "score 'el2n' has length 51"),
    ({"aign": np.full(50, np.nan, dtype=np.float32)}, "'aign' holds a non-finite"),
    ({"features": np.full((50, 2), np.inf, dtype=np.float16)}, "'features' holds a non-finite"),
    ({"aign_per_epoch": np.zeros((50, 3), dtype=np.float32)}, "tracked_epochs"),
    ({"aign_per_epoch": np.zeros(50, dtype=np.float32)}, "must have 2 dimension"),
    ({"index": np.zeros(50, dtype=np.int64)}, "duplicate"),
    ({"index": np.arange(50) + 1000}, r"outside the training set \[0, 150\)"),
    ({"index": -np.arange(50)}, "negative"),
    ({"index": np.arange(50.0)}, "expected integers"),
    ({"labels": None}, "'labels' is missing"),
    ({"loss": np.array(["a"] * 50)}, "expected real numbers"),
])
def test_broken_files_raise_one_clear_error(tmp_path, change, match):
    path = write_raw(tmp_path / "bad.npz", raw_arrays(make_table(), **change))
    with pytest.raises(SamplewiseError, match=match) as err:
        ScoreTable.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_unreadable_files(tmp_path):
    make_table().save(tmp_path / "good.npz")
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[len(data) // 3: len(data) // 3 + 64] = bytes(64)
    (tmp_path / "corrupt.npz").write_bytes(bytes(corrupt))
    (tmp_path / "text.npz").write_text("hello")
    np.save(tmp_path / "single.npy", np.arange(3))
    np.savez(tmp_path / "pickled.npz", index=np.array([object()], dtype=object))
    for name in ["trunc.npz", "corrupt.npz", "text.npz", "single.npy", "pickled.npz",
                 "missing.npz"]:
        with pytest.raises(SamplewiseError, match=name.replace(".", r"\.")):
            ScoreTable.load(tmp_path / name)


def test_in_memory_validation(tmp_path):
    with pytest.raises(SamplewiseError, match="non-finite"):
        ScoreTable([0, 1], [0, 0], {"aign": [0.0, np.nan]})
    with pytest.raises(SamplewiseError, match="invalid score name"):
        ScoreTable([0, 1], [0, 0], {"labels": [0.0, 1.0]})
    with pytest.raises(SamplewiseError, match="num_train"):
        ScoreTable([0, 1], [0, 0], meta={"num_train": 1})
    with pytest.raises(SamplewiseError, match="overflow float16"):
        ScoreTable([0], [0], features=np.full((1, 2), 1e6)).save(tmp_path / "x.npz")


# ---------------------------------------------------------------------------- property tests
_DTYPES = st.sampled_from([np.int64, np.int32, np.uint64, np.uint8, np.float16, np.float32,
                           np.float64, np.bool_, np.complex64, "U3"])
_KEYS = st.sampled_from(["index", "labels", "aign", "el2n", "aign_per_epoch", "features", "junk"])


@st.composite
def _garbage_array(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=6))
    return draw(hnp.arrays(draw(_DTYPES), shape))


@st.composite
def _garbage_files(draw):
    arrays = draw(st.dictionaries(_KEYS, _garbage_array(), max_size=7))
    meta = draw(st.one_of(
        st.none(),
        st.builds(lambda d: np.array(json.dumps({"format": FORMAT, **d})),
                  st.dictionaries(st.sampled_from(["num_train", "tracked_epochs", "x"]),
                                  st.one_of(st.integers(-3, 10**20), st.floats(allow_nan=False),
                                            st.lists(st.integers(0, 5), max_size=6),
                                            st.text(max_size=3)))),
        st.text(max_size=20).map(np.array),
        _garbage_array()))
    if meta is not None:
        arrays["meta"] = meta
    return arrays


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """One folder for the property tests' files (module scope: hypothesis reruns a test body
    many times within one call, which a function-scoped fixture would not reset)."""
    return tmp_path_factory.mktemp("scorefile")


_SETTINGS = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(_garbage_files())
def test_load_never_raises_anything_but_samplewise_error(scratch, arrays):
    path = write_raw(scratch / "garbage.npz", arrays)
    try:
        table = ScoreTable.load(path)
    except SamplewiseError as exc:
        assert "\n" not in str(exc)
        return
    assert all(len(v) == len(table) for v in table.scores.values())


@_SETTINGS
@given(st.integers(0, 10**6), st.integers(1, 64), st.booleans())
def test_damaged_bytes_never_raise_anything_but_samplewise_error(scratch, pos, width, truncate):
    good = scratch / "good.npz"
    if not good.exists():
        make_table(n=30).save(good)
    data = bytearray(good.read_bytes())
    pos %= len(data)
    if truncate:
        data = data[:pos]
    else:
        data[pos:pos + width] = bytes((b + 1) % 256 for b in data[pos:pos + width])
    (scratch / "damaged.npz").write_bytes(bytes(data))
    try:
        ScoreTable.load(scratch / "damaged.npz")
    except SamplewiseError:
        pass
