"""Bad input is one line, ``samplewise: error: ...``, exit status 2, no traceback, and nothing
written: an output directory that did not exist is not created, an existing output keeps its
bytes, and a pickle in a user's file is never run.

Every case runs the real command line (``samplewise.cli.main``) inside one prepared folder, so
the messages name short relative paths and are compared **exactly**; docs/reliability.md lists
them. Registry lists and dataset fingerprints in a message are computed, not hard-coded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from samplewise.cli import main
from samplewise.config import TrainConfig
from samplewise.coreset import SELECTORS
from samplewise.data import load_dataset
from samplewise.data.datasets import FMNIST_DIR
from samplewise.hardness.scoring import scores_from_model
from samplewise.models import create_model, save_model
from samplewise.objectives import OBJECTIVES

HAS_FMNIST = (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file()
VALID_KEYS = ", ".join(f.name for f in fields(TrainConfig))
SELECTOR_NAMES = ", ".join(SELECTORS.names())
OBJECTIVE_NAMES = ", ".join(OBJECTIVES.names())
#: torch's own words for a model file cut short (the part after samplewise's prefix)
TORCH_TRUNCATED = "PytorchStreamReader failed reading zip archive: failed finding central directory"


class Bomb:
    """Unpickling this would run ``touch PWNED`` in the current folder."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _npz(name: str, **arrays) -> None:
    np.savez(name, **arrays)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder holding a digits score file, subsets, npz datasets, models and configs."""
    d = tmp_path_factory.mktemp("bad-inputs")
    old = os.getcwd()
    os.chdir(d)
    try:
        digits = load_dataset("digits")
        torch.manual_seed(0)
        model = create_model("cnn-small", digits.card)
        scores_from_model(model, digits).save("scores.npz")
        save_model("model.pt", model)
        payload = torch.load("model.pt", weights_only=True)
        # a subset from `select` (npy + json), whose bytes must survive every refused command
        assert main(["-q", "select", "--scores", "scores.npz", "--method", "random",
                     "--fraction", "0.2", "--out", "keep.npy"]) == 0
        # subsets
        np.save("dup.npy", np.array([1, 2, 2, 3]))
        np.save("oor.npy", np.array([1, 2, 5000]))
        np.save("neg.npy", np.array([-1, 2]))
        np.save("float.npy", np.array([1.0, 2.0]))
        np.save("twod.npy", np.array([[1, 2]]))
        np.save("empty.npy", np.array([], dtype=np.int64))
        np.save("object.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
        Path("text.npy").write_text("1,2,3\n")
        np.save("other.npy", np.array([1, 2, 3]))
        Path("other.json").write_text(json.dumps({"format": "samplewise.subset/1",
                                                  "dataset": "cifar10",
                                                  "fingerprint": "0000000000000000"}))
        good = Path("keep.npy").read_bytes()
        Path("cut.npy").write_bytes(good[:200])
        # npz datasets
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (60, 8, 8), dtype=np.uint8)
        y = np.arange(60) % 3
        _npz("no_x.npz", y=y)
        _npz("float_x.npz", x=x.astype(np.float32), y=y)
        _npz("flat_x.npz", x=np.zeros(60, np.uint8), y=y)
        _npz("seven_channels.npz", x=np.zeros((60, 8, 8, 7), np.uint8), y=y)
        _npz("zero_height.npz", x=np.zeros((60, 0, 8), np.uint8), y=y)
        _npz("no_images.npz", x=np.zeros((0, 8, 8), np.uint8), y=np.zeros(0, np.int64))
        _npz("short_y.npz", x=x, y=y[:50])
        _npz("float_y.npz", x=x, y=y.astype(np.float64))
        _npz("column_y.npz", x=x, y=y[:, None])
        _npz("negative_y.npz", x=x, y=y - 1)
        _npz("gap_y.npz", x=x, y=np.where(y == 1, 2, y))
        _npz("huge_y.npz", x=x, y=np.where(y == 2, 2**40, y))
        wrap = y.astype(np.uint64)
        wrap[0] = 2**63 + 1
        _npz("uint64_y.npz", x=x, y=wrap)
        _npz("x_test_only.npz", x=x, y=y, x_test=x)
        _npz("test_shape.npz", x=x, y=y, x_test=np.zeros((10, 9, 9), np.uint8),
             y_test=np.zeros(10, np.int64))
        _npz("test_label.npz", x=x, y=y, x_test=x[:10], y_test=np.full(10, 5))
        _npz("too_few.npz", x=x[:4], y=np.array([0, 1, 2, 3]))
        np.savez("object_x.npz", x=np.array([object()] * 60, dtype=object), y=y)
        np.save("single.npy", x)
        os.replace("single.npy", "single.npz")
        Path("text.npz").write_text("hello")
        data = Path("gap_y.npz").read_bytes()
        Path("cut.npz").write_bytes(data[: len(data) // 2])
        _npz("other_data.npz", x=x, y=y)  # a valid dataset with its own fingerprint
        # model files
        for name, change in {
            "arch_mlp.pt": {"arch": "mlp"},
            "arch_mlp_plain.pt": {"arch": "mlp", "arch_kwargs": {}},
            "wider.pt": {"arch_kwargs": {"width": 3}},
            "unknown_arch.pt": {"arch": "nope"},
            "other_format.pt": {"format": "somebody.else/3"},
        }.items():
            torch.save({**payload, **change}, name)
        broken = {**payload, "state_dict": {**payload["state_dict"], "net.body.0.weight": "oops"}}
        torch.save(broken, "not_a_tensor.pt")
        raw = Path("model.pt").read_bytes()
        Path("cut.pt").write_bytes(raw[: len(raw) // 2])
        Path("empty.pt").write_bytes(b"")
        torch.save({"weights": torch.zeros(3)}, "plain_dict.pt")
        torch.save({"format": "samplewise.model/1", "state_dict": Bomb()}, "bomb.pt")
        # configs
        Path("unknown_key.yaml").write_text("epochs: 1\ncolour: red\n")
        Path("wrong_type.yaml").write_text("epochs: ten\n")
        Path("list.yaml").write_text("- epochs\n- 1\n")
        Path("broken.yaml").write_text("epochs: [1,\n")
        Path("python_tag.yaml").write_text(
            "epochs: !!python/object/apply:os.system ['touch PWNED']\n")
        # a run that was killed after its first checkpoint (for --resume cases)
        assert main(["-q", "train", "--model", "cnn-small", "--epochs", "1", "--out", "run",
                     "--set", "eval_n=10", "eval_steps=1", "monitor_steps=1",
                     "progress=false"]) == 0
        for name in ("model.pt", "result.json"):
            os.remove(Path("run") / name)
        yield d
    finally:
        os.chdir(old)


@pytest.fixture()
def here(work, monkeypatch):
    monkeypatch.chdir(work)
    return work


@pytest.fixture()
def out(request) -> str:
    """An output directory name of this test case alone (it must not exist afterwards)."""
    return "out-" + re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:80]


def fails(capsys, argv, message: str, *, exact: bool = True, absent=(), keep=()) -> str:
    """Run ``samplewise ARGV``: status 2, one stderr line ``samplewise: error: MESSAGE``, the
    paths in ``absent`` not created, the files in ``keep`` unchanged, no pickle run."""
    keep = [Path(p) for p in (*keep, "keep.npy", "keep.json")]
    before = {p: p.read_bytes() for p in keep}
    absent = [Path(p) for p in absent]
    assert not any(p.exists() for p in absent)
    code = main(["-q", *map(str, argv)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured
    assert len(lines) == 1 and lines[0].startswith("samplewise: error: "), captured.err
    got = lines[0][len("samplewise: error: "):]
    if exact:
        assert got == message
    else:
        assert message in got, got
    assert "Traceback" not in captured.err
    for p in absent:
        assert not p.exists(), f"{p} was created"
    for p, data in before.items():
        assert p.read_bytes() == data, f"{p} was overwritten"
    assert not Path("PWNED").exists(), "a pickle in a user's file was executed"
    return got


def _digits_fp() -> str:
    return load_dataset("digits").fingerprint


# ---------------------------------------------------------------------------- select
@pytest.mark.parametrize("fraction, shown", [("0", "0.0"), ("1.5", "1.5"), ("-0.1", "-0.1"),
                                             ("nan", "nan"), ("inf", "inf")],
                         ids=["0", "1.5", "-0.1", "nan", "inf"])
def test_select_fraction_outside_0_1(here, capsys, fraction, shown):
    for target in ("keep.npy", "fresh.npy"):  # an existing subset keeps its bytes; none is made
        fails(capsys, ["select", "--scores", "scores.npz", "--method", "easycore", "--fraction",
                       fraction, "--out", target], f"fraction must be in (0, 1], got {shown}",
              absent=["fresh.npy", "fresh.json"] if target == "fresh.npy" else ())


def test_select_unknown_method_lists_the_valid_ones(here, capsys):
    fails(capsys, ["select", "--scores", "scores.npz", "--method", "nope", "--fraction", "0.3",
                   "--out", "keep.npy"], f"unknown selector 'nope'; choose from: {SELECTOR_NAMES}")


@pytest.mark.skipif(not HAS_FMNIST, reason="Fashion-MNIST not installed "
                    "(apt-get install dataset-fashion-mnist); the npz case below still runs")
def test_select_score_file_of_another_dataset_fashion_mnist(here, capsys):
    fp = load_dataset("fashion-mnist").fingerprint
    fails(capsys, ["select", "--scores", "scores.npz", "--method", "easycore", "--fraction",
                   "0.3", "--dataset", "fashion-mnist", "--out", "keep.npy"],
          f"score file scores.npz was computed on dataset digits (fingerprint {_digits_fp()}); "
          f"this run uses fashion-mnist (fingerprint {fp})")


def test_select_score_file_of_another_dataset_npz(here, capsys):
    fp = load_dataset("npz:other_data.npz").fingerprint
    fails(capsys, ["select", "--scores", "scores.npz", "--method", "easycore", "--fraction",
                   "0.3", "--dataset", "npz:other_data.npz", "--out", "keep.npy"],
          f"score file scores.npz was computed on dataset digits (fingerprint {_digits_fp()}); "
          f"this run uses npz:other_data.npz (fingerprint {fp})")


SCORE_FILE_CASES = [
    ("cut.npz", "cut.npz: cannot read score file (File is not a zip file)"),
    ("text.npz", "text.npz: cannot read score file (neither a .npy nor a .npz file)"),
    ("model.pt", "score file model.pt: not a samplewise score file (no 'meta' array)"),
    ("missing.npz", "score file not found: missing.npz"),
]


@pytest.mark.parametrize("scores, message", SCORE_FILE_CASES, ids=[c[0] for c in SCORE_FILE_CASES])
def test_select_unreadable_score_file(here, capsys, scores, message):
    fails(capsys, ["select", "--scores", scores, "--method", "easycore", "--fraction", "0.3",
                   "--out", "keep.npy"], message)


SELECT_OPTION_CASES = [
    (["--window", "5"], "--window takes START:STOP epochs, got '5'"),
    (["--seed", "-1"], "seed must be a non-negative integer, got -1"),
    (["--method", "ccs", "--score", "nope"],
     "the score file has no score 'nope'; present: aign, el2n, grand, loss"),
]


@pytest.mark.parametrize("extra, message", SELECT_OPTION_CASES,
                         ids=[" ".join(c[0]) for c in SELECT_OPTION_CASES])
def test_select_bad_options(here, capsys, extra, message):
    argv = ["select", "--scores", "scores.npz", "--method", "easycore", "--fraction", "0.3",
            "--out", "keep.npy"]
    fails(capsys, argv + extra, message)


# ---------------------------------------------------------------------------- train --subset
SUBSET_CASES = [
    ("dup.npy", "dup.npy: subset indices must be unique; 1 repeated (e.g. 2)"),
    ("oor.npy", "oor.npy: 1 subset indices out of range [0, 1347) (e.g. 5000)"),
    ("neg.npy", "neg.npy: 1 subset indices out of range [0, 1347) (e.g. -1)"),
    ("float.npy", "float.npy: subset indices must be integers, got dtype float64"),
    ("twod.npy", "twod.npy: subset file must hold a 1-D array, got shape (1, 2)"),
    ("empty.npy", "empty.npy: subset file is empty"),
    ("object.npy", "object.npy: cannot read subset file (Object arrays cannot be loaded when "
                   "allow_pickle=False)"),
    ("text.npy", "text.npy: cannot read subset file (neither a .npy nor a .npz file)"),
    ("cut.npy", "cut.npy: cannot read subset file (Failed to read all data for array)"),
    ("missing.npy", "subset file not found: missing.npy"),
]


@pytest.mark.parametrize("subset, message", SUBSET_CASES, ids=[c[0] for c in SUBSET_CASES])
def test_train_bad_subset(here, capsys, subset, message, out):
    fails(capsys, ["train", "--model", "mlp", "--epochs", "1", "--subset", subset,
                   "--out", out], message, absent=[out])


def test_train_subset_of_another_dataset(here, capsys, out):
    fails(capsys, ["train", "--model", "mlp", "--epochs", "1", "--subset", "other.npy",
                   "--out", out],
          "subset other.npy was selected from cifar10 (fingerprint 0000000000000000); this run "
          f"trains on digits (fingerprint {_digits_fp()})", absent=[out])


# ---------------------------------------------------------------------------- train --dataset npz:
NPZ_CASES = [
    ("no_x.npz", "no_x.npz: missing array(s) ['x']; found ['y']"),
    ("float_x.npz", "float_x.npz: 'x' must be uint8, got float32"),
    ("flat_x.npz", "flat_x.npz: 'x' must be N x H x W or N x H x W x C (C <= 4, N, H, W > 0), "
                   "got shape (60,)"),
    ("seven_channels.npz", "seven_channels.npz: 'x' must be N x H x W or N x H x W x C (C <= 4, "
                           "N, H, W > 0), got shape (60, 8, 8, 7)"),
    ("zero_height.npz", "zero_height.npz: 'x' must be N x H x W or N x H x W x C (C <= 4, "
                        "N, H, W > 0), got shape (60, 0, 8)"),
    ("no_images.npz", "no_images.npz: 'x' must be N x H x W or N x H x W x C (C <= 4, "
                      "N, H, W > 0), got shape (0, 8, 8)"),
    ("short_y.npz", "short_y.npz: 'y' has 50 labels for 60 images"),
    ("float_y.npz", "float_y.npz: 'y' must be a 1-D integer array, got float64 (60,)"),
    ("column_y.npz", "column_y.npz: 'y' must be a 1-D integer array, got int64 (60, 1)"),
    ("negative_y.npz", "negative_y.npz: 'y' has negative label -1"),
    ("gap_y.npz", "gap_y.npz: labels must be 0..K-1 with every class in the training set; "
                  "class(es) [1] have no samples"),
    ("huge_y.npz", "huge_y.npz: 'y' has label 1099511627776; labels must be class numbers "
                   "0..K-1 (K <= the 60 samples)"),
    ("uint64_y.npz", "uint64_y.npz: 'y' has label 9223372036854775809; labels must be class "
                     "numbers 0..K-1 (K <= the 60 samples)"),
    ("x_test_only.npz", "x_test_only.npz: give both x_test and y_test, or neither"),
    ("test_shape.npz", "test_shape.npz: x_test images are (1, 9, 9) but x images are "
                       "(1, 8, 8) (C, H, W)"),
    ("test_label.npz", "test_label.npz: y_test has label 5 but training labels stop at 2"),
    ("too_few.npz", "too_few.npz: 4 samples are too few for an 80/20 split with 4 classes; "
                    "provide a test set"),
    ("object_x.npz", "object_x.npz: cannot read npz file (Object arrays cannot be loaded when "
                     "allow_pickle=False)"),
    ("single.npz", "single.npz: not an .npz archive (expected arrays x, y [, x_test, y_test])"),
    ("text.npz", "text.npz: cannot read npz file (neither a .npy nor a .npz file)"),
    ("cut.npz", "cut.npz: cannot read npz file (File is not a zip file)"),
    ("missing.npz", "npz file not found: missing.npz"),
]


@pytest.mark.parametrize("name, message", NPZ_CASES, ids=[c[0] for c in NPZ_CASES])
def test_train_malformed_npz_dataset(here, capsys, name, message, out):
    fails(capsys, ["train", "--dataset", f"npz:{name}", "--model", "mlp", "--epochs", "1",
                   "--out", out], message, absent=[out])


# ---------------------------------------------------------------------------- eval --model
EVAL_CASES = [
    ("arch_mlp.pt", "arch_mlp.pt: cannot rebuild architecture 'mlp': model 'mlp' got unknown "
                    "option(s) bn, width; valid options: hidden, depth"),
    ("arch_mlp_plain.pt", "arch_mlp_plain.pt: weights do not fit architecture 'mlp' {} named in "
                          "the file: 4 missing key(s) (e.g. net.body.1.weight, net.body.1.bias, "
                          "net.body.3.weight); 6 unexpected key(s) (e.g. net.body.0.weight, "
                          "net.body.0.bias, net.body.2.weight); 1 shape mismatch(es) (file vs "
                          "model: net.head.weight (10, 128) vs (10, 256))"),
    ("wider.pt", "wider.pt: weights do not fit architecture 'cnn-small' {'width': 3} named in "
                 "the file: 7 shape mismatch(es) (file vs model: net.body.0.weight (32, 1, 3, 3) "
                 "vs (96, 1, 3, 3); net.body.0.bias (32,) vs (96,); net.body.2.weight "
                 "(64, 32, 3, 3) vs (192, 96, 3, 3))"),
    ("unknown_arch.pt", "unknown_arch.pt: cannot rebuild architecture 'nope': unknown model "
                        "'nope'; choose from: {models}"),
    ("other_format.pt", "other_format.pt: unsupported model file format 'somebody.else/3' "
                        "(this samplewise reads 'samplewise.model/1')"),
    ("not_a_tensor.pt", "not_a_tensor.pt: weights do not fit architecture 'cnn-small' "
                        "{'width': 1.0, 'bn': False} named in the file: 1 shape mismatch(es) "
                        "(file vs model: net.body.0.weight (str, not a tensor) vs (32, 1, 3, 3))"),
    ("cut.pt", "cut.pt: cannot read model file (corrupt, truncated or not a samplewise file: "
               f"{TORCH_TRUNCATED})"),
    ("empty.pt", "empty.pt: cannot read model file (corrupt, truncated or not a samplewise file: "
                 "EOFError)"),
    ("plain_dict.pt", "plain_dict.pt: not a samplewise model file (no 'format' entry)"),
    ("bomb.pt", "bomb.pt: refused to load model file: it holds objects other than tensors and "
                "plain data (weights_only=True)"),
    ("missing.pt", "model file not found: missing.pt"),
]


@pytest.mark.parametrize("model, message", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_eval_bad_model_file(here, capsys, model, message):
    from samplewise.models import list_models
    fails(capsys, ["eval", "--model", model, "--attack", "clean", "--per-sample", "out.json"],
          message.replace("{models}", ", ".join(list_models())), absent=["out.json"])


def test_pickle_bomb_is_refused_everywhere_and_never_runs(here, capsys, out):
    """The same pickle bomb as a model, a teacher and a checkpoint: refused, never executed."""
    msg = ("bomb.pt: refused to load model file: it holds objects other than tensors and plain "
           "data (weights_only=True)")
    fails(capsys, ["distill", "--teacher", "bomb.pt", "--out", out], msg,
          absent=[out])
    run = Path("bombrun")
    run.mkdir(exist_ok=True)
    (run / "checkpoint.pt").write_bytes(Path("bomb.pt").read_bytes())
    fails(capsys, ["train", "--model", "mlp", "--out", "bombrun", "--resume"],
          "bombrun/checkpoint.pt: refused to load checkpoint: it holds objects other than "
          "tensors and plain data (weights_only=True)")
    assert not Path("PWNED").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_eval_on_cuda_without_cuda(here, capsys):
    fails(capsys, ["eval", "--model", "model.pt", "--device", "cuda"],
          "device 'cuda' requested but CUDA is not available here (use --device cpu)")


def test_eval_batch_size_zero(here, capsys):
    fails(capsys, ["eval", "--model", "model.pt", "--attack", "clean", "--batch-size", "0"],
          "batch_size must be >= 1, got 0", exact=False)


# ---------------------------------------------------------------------------- distill teachers
def test_distill_robustbench_not_installed(here, capsys, monkeypatch, out):
    monkeypatch.setitem(sys.modules, "robustbench", None)
    monkeypatch.setitem(sys.modules, "robustbench.utils", None)
    fails(capsys, ["distill", "--teacher", "robustbench:Carmon2019Unlabeled", "--out", out],
          "RobustBench is not installed (pip install 'samplewise[robustbench]'); or pass a local "
          "checkpoint: --teacher PATH/model.pt", absent=[out])


def test_distill_robustbench_offline(here, capsys, monkeypatch, out):
    """RobustBench importable but the download fails (no network): point to a local copy."""
    import types
    utils = types.ModuleType("robustbench.utils")

    def load_model(**kw):
        raise ConnectionError("[Errno 101] Network is unreachable")

    utils.load_model = load_model
    monkeypatch.setitem(sys.modules, "robustbench", types.ModuleType("robustbench"))
    monkeypatch.setitem(sys.modules, "robustbench.utils", utils)
    monkeypatch.setenv("SAMPLEWISE_ROBUSTBENCH_DIR", "rb-models")
    fails(capsys, ["distill", "--teacher", "robustbench:Carmon2019Unlabeled", "--out", out],
          "RobustBench model Carmon2019Unlabeled (digits, Linf) could not be loaded; the download "
          "failed or the id is wrong ([Errno 101] Network is unreachable). Download it on a "
          "machine with internet and copy it to rb-models/digits/Linf/Carmon2019Unlabeled.pt, "
          "then use robustbench:Carmon2019Unlabeled again; or convert it to a local checkpoint "
          "with samplewise.models.wrap_external(module, card) + save_model and pass "
          "--teacher PATH/model.pt", absent=[out])


def test_distill_robustbench_as_installed_here(here, capsys, out):
    """Whatever this machine has (no network in CI): one line that points to a local checkpoint."""
    probe = subprocess.run([sys.executable, "-c", "import robustbench.utils"],
                           capture_output=True, text=True)
    if probe.returncode == 0:
        pytest.skip("robustbench imports here; loading it could reach the network")
    fails(capsys, ["distill", "--teacher", "robustbench:Carmon2019Unlabeled", "--out", out],
          "--teacher PATH/model.pt", exact=False, absent=[out])


TEACHER_CASES = [
    ("cut.pt", "cut.pt: cannot read model file (corrupt, truncated or not a samplewise file: "
               f"{TORCH_TRUNCATED})"),
    ("nothere.pt", "teacher not found: nothere.pt (expected a samplewise model file, a run "
                   "directory, or robustbench:ID)"),
]


@pytest.mark.parametrize("teacher, message", TEACHER_CASES, ids=[c[0] for c in TEACHER_CASES])
def test_distill_bad_teacher(here, capsys, teacher, message, out):
    fails(capsys, ["distill", "--teacher", teacher, "--out", out], message,
          absent=[out])


def test_distill_unknown_method(here, capsys, out):
    fails(capsys, ["distill", "--teacher", "model.pt", "--method", "nope", "--out", out],
          f"unknown objective 'nope'; choose from: {OBJECTIVE_NAMES}", absent=[out])


# ---------------------------------------------------------------------------- configs and flags
CONFIG_CASES = [
    (["--config", "unknown_key.yaml"], f"unknown config key 'colour'; valid keys: {VALID_KEYS}"),
    (["--config", "wrong_type.yaml"], "config key 'epochs' expects int, got 'ten'"),
    (["--config", "list.yaml"], "list.yaml: a config file must be a mapping of key: value"),
    (["--config", "broken.yaml"], "broken.yaml: not valid YAML (line 2)"),
    (["--config", "python_tag.yaml"], "python_tag.yaml: not valid YAML (line 1)"),
    (["--config", "missing.yaml"], "config file not found: missing.yaml"),
    (["--eps", "-1"], "eps must be >= 0, got -1.0"),
    (["--eps", "nan"], "eps must be >= 0, got nan"),
    (["--epochs", "0"], "epochs must be > 0, got 0"),
    (["--epochs", "x"], "samplewise train: argument --epochs: invalid int value: 'x'"),
    (["--alpha", "0"], "alpha must be > 0, got 0.0"),
    (["--lr", "-1"], "lr must be >= 0, got -1.0"),
    (["--batch-size", "0"], "batch_size must be > 0, got 0"),
    (["--steps", "-1"], "attack steps must be >= 0"),
    (["--train-size", "0"], "train_size must be >= 1, got 0"),
    (["--train-size", "99999"], "train_size must be an integer in 1..1347 for digits, got 99999"),
    (["--device", "cuda"], "device 'cuda' requested but CUDA is not available here "
                           "(use --device cpu)"),
    (["--device", "nope"], "unknown device 'nope'; use cpu, cuda, cuda:N or mps"),
    (["--set", "colour=red"], f"unknown config key 'colour'; valid keys: {VALID_KEYS}"),
    (["--set", "noequals"], "override 'noequals' is not of the form key=value"),
    (["--set", "epochs=1.5"], "config key 'epochs' expects int, got 1.5"),
    (["--set", "progress=maybe"], "config key 'progress' expects bool, got 'maybe'"),
    (["--set", "gamma=-1"], "gamma must be > 0, got -1.0"),
    (["--set", "momentum=-1"], "momentum must be >= 0, got -1.0"),
    (["--set", "weight_decay=-1"], "weight_decay must be >= 0, got -1.0"),
    (["--set", "warmup_epochs=.nan"], "warmup_epochs must be >= 0, got nan"),
    (["--set", "grad_clip=0"], "grad_clip must be > 0, got 0.0"),
    (["--set", "grad_clip=.nan"], "grad_clip must be > 0, got nan"),
    (["--set", "schedule=linear"], "unknown schedule 'linear'; choose from: multistep, cosine, "
                                   "onecycle, constant"),
    (["--set", "milestones=[2]"], "milestones must be fractions of the epochs in [0, 1], got (2,)"),
    (["--set", "model_args={hidden:0}"], "hidden must be an integer >= 1, got 0"),
    (["--set", "model_args={width:2}"], "model 'mlp' got unknown option(s) width; valid "
                                        "options: hidden, depth"),
    (["--dataset", "nope"], "unknown dataset 'nope'; choose from: {datasets}"),
    (["--objective", "nope"], f"unknown objective 'nope'; choose from: {OBJECTIVE_NAMES}"),
    (["--objective", "trades", "--set", "objective_args={nope:1}"],
     "objective 'trades' got unknown option(s): nope"),
]


@pytest.mark.parametrize("extra, message", CONFIG_CASES, ids=[" ".join(c[0]) for c in CONFIG_CASES])
def test_train_bad_config_or_flag(here, capsys, extra, message, out):
    from samplewise.data import list_datasets
    message = message.replace("{datasets}", ", ".join(list_datasets()))
    fails(capsys, ["train", "--model", "mlp", "--out", out, *extra], message,
          absent=[out])


def test_yaml_exponent_floats_are_numbers(here):
    """YAML 1.1 reads ``1e-3`` as a string; samplewise reads it as the number everyone means."""
    from samplewise.config import load_config
    Path("exp.yaml").write_text("lr: 1e-3\ngamma: 2E+1\n")
    cfg = load_config(path="exp.yaml", overrides=["grad_clip=1e-6", "model_args={width:2}"])
    assert (cfg.lr, cfg.gamma, cfg.grad_clip) == (0.001, 20.0, 1e-6)
    assert cfg.model_args == {"width": 2}


@pytest.mark.parametrize("beta", ["-1", "x", ".nan"])
def test_trades_bad_beta(here, capsys, beta, out):
    fails(capsys, ["train", "--model", "mlp", "--objective", "trades", "--epochs", "1",
                   "--out", out, "--set", f"objective_args={{beta: {beta}}}",
                   "eval_n=10", "eval_steps=1", "monitor_steps=1", "progress=false"],
          "beta", exact=False, absent=[out])


# ---------------------------------------------------------------------------- resume
def _killed_run(name: str) -> str:
    """A fresh copy of the cnn-small run that stopped after its checkpoint (no model.pt)."""
    shutil.rmtree(name, ignore_errors=True)
    shutil.copytree("run", name)
    return name


def test_resume_with_another_architecture_is_refused(here, capsys):
    run = _killed_run("run-arch")
    fails(capsys, ["train", "--model", "mlp", "--epochs", "1", "--out", run, "--resume",
                   "--set", "eval_n=10", "eval_steps=1", "monitor_steps=1"],
          f"{run} was run with model='cnn-small', but this run asks for model='mlp'; resume with "
          "the run's own settings or pass --overwrite",
          keep=[f"{run}/checkpoint.pt", f"{run}/metrics.jsonl"])


def test_refused_resume_keeps_config_yaml(here, capsys):
    run = _killed_run("run-arch-config")
    fails(capsys, ["train", "--model", "mlp", "--epochs", "1", "--out", run, "--resume"],
          "was run with model='cnn-small'", exact=False, keep=[f"{run}/config.yaml"])


def test_resume_from_a_truncated_checkpoint(here, capsys):
    run = Path("cutrun")
    run.mkdir(exist_ok=True)
    data = Path("run", "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 3])
    fails(capsys, ["train", "--model", "cnn-small", "--epochs", "1", "--out", "cutrun",
                   "--resume"],
          "cutrun/checkpoint.pt: cannot read checkpoint (corrupt, truncated or not a samplewise "
          f"file: {TORCH_TRUNCATED})", keep=["cutrun/checkpoint.pt"])


def test_resume_of_nothing_is_refused(here, capsys):
    fails(capsys, ["train", "--model", "mlp", "--epochs", "1", "--out", "never", "--resume"],
          "nothing to resume: never/checkpoint.pt does not exist")


def test_resume_of_nothing_creates_nothing(here, capsys):
    fails(capsys, ["train", "--model", "mlp", "--epochs", "1", "--out", "never2", "--resume"],
          "nothing to resume", exact=False, absent=["never2"])


def test_out_is_a_file(here, capsys):
    fails(capsys, ["train", "--model", "mlp", "--out", "keep.json"],
          "--out keep.json exists and is not a directory")


# ---------------------------------------------------------------------------- as a user sees it
def test_subprocess_errors_have_no_traceback(here):
    """Two cases through a real process: stderr is exactly one line, status 2."""
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    for argv in (["select", "--scores", "scores.npz", "--method", "easycore", "--fraction",
                  "nan", "--out", "keep.npy"],
                 ["eval", "--model", "bomb.pt"]):
        p = subprocess.run([sys.executable, "-m", "samplewise", "-q", *argv], cwd=here, env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("samplewise: error: "), p.stderr
    assert not (here / "PWNED").exists()
