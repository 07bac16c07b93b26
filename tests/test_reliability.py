"""Faults injected on purpose: SIGKILL mid-epoch then ``--resume``, SIGKILL inside a file write,
failed writes, truncated and corrupted files, NaN losses, gradient clipping, and fuzzed config
overrides, score files and model files. docs/reliability.md lists each fault and its outcome.

The SIGKILL tests run the real command line in subprocesses on the bundled digits: an
uninterrupted run A and a run B killed (``SIGKILL``, no chance to clean up) at a point in a
later epoch, then resumed with ``--resume``; on the CPU, B must equal A bit for bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samplewise import io
from samplewise.cli import main
from samplewise.config import TrainConfig, load_config
from samplewise.errors import SamplewiseError
from samplewise.hardness import ScoreTable
from samplewise.models import create_model, load_model, save_model
from samplewise.runs import run_training
from samplewise.hooks import Hook

from runcheck import TIMING, assert_same_run

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}
#: small evaluation slices; one thread per process so that two runs side by side do not fight
FAST = ["eval_n=100", "eval_steps=3", "monitor_steps=2", "progress=false", "threads=1"]


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "samplewise", "-q", *map(str, args)]


def _spawn(args, log: Path) -> subprocess.Popen:
    with open(log, "wb") as err:
        return subprocess.Popen(_cli(*args), stdout=subprocess.DEVNULL, stderr=err, env=ENV)


#: the killed jobs: the command, its epochs, and how far into epoch 2 the SIGKILL lands
#: (a share of epoch 1's duration). cnn-small PGD-AT (3 steps) takes about a second per
#: epoch on digits; the scoring run adds a per-sample input-gradient pass after each epoch.
JOBS = {
    "train": (["train", "--dataset", "digits", "--model", "cnn-small", "--objective", "pgd-at",
               "--steps", "3", "--epochs", "2"], 2, 0.4),
    "score": (["score", "--dataset", "digits", "--model", "cnn-small", "--epochs", "3",
               "--batch-size", "32"], 3, 0.5),
}


def _files_at_kill(run: Path) -> dict:
    """Read every file the SIGKILL left (temporary files aside): name -> what it held, or the
    error it raised (recorded, then asserted empty by the tests)."""
    found, errors = {}, {}
    readers = {"checkpoint.pt": lambda f: io.torch_load(f, "checkpoint")["epoch"],
               "metrics.jsonl": lambda f: [m["epoch"] for m in io.read_jsonl(f)],
               "config.yaml": lambda f: yaml.safe_load(f.read_text())["epochs"]}
    for f in sorted(run.iterdir()):
        if f.name.endswith(".tmp"):
            found.setdefault("tmp", []).append(f.name)
            continue
        if f.name == ".lock":  # the run directory's lock file (samplewise.runlock)
            continue
        try:
            found[f.name] = readers[f.name](f)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted on by the tests
            errors[f.name] = f"{type(exc).__name__}: {exc}"
    return {"files": found, "errors": errors}


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory):
    """For each job: run A to completion and, side by side, run B until epoch 1's checkpoint
    exists, SIGKILL it inside epoch 2, read what it left, and ``--resume`` it."""
    d = tmp_path_factory.mktemp("sigkill")
    procs, facts, kill_at = {}, {}, {}
    for name, (args, _, _) in JOBS.items():
        for tag in "AB":
            procs[name, tag] = _spawn([*args, "--out", d / f"{name}-{tag}", "--set", *FAST],
                                      d / f"{name}-{tag}.log")
    deadline = time.monotonic() + 400
    try:
        while len(facts) < len(JOBS):
            for name, (args, _, share) in JOBS.items():
                if name in facts:
                    continue
                run, proc = d / f"{name}-B", procs[name, "B"]
                if name not in kill_at:
                    if (run / "checkpoint.pt").exists():  # epoch 2 has just started
                        seconds = io.read_jsonl(run / "metrics.jsonl")[0]["seconds"]
                        kill_at[name] = time.monotonic() + share * seconds
                    elif proc.poll() is not None:
                        pytest.fail(f"{name}: B ended early: {(d / f'{name}-B.log').read_text()}")
                elif time.monotonic() >= kill_at[name]:
                    alive = proc.poll() is None
                    if alive:
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=60)
                    facts[name] = {"alive": alive, "returncode": proc.returncode,
                                   **_files_at_kill(run)}
                    procs[name, "R"] = _spawn([*args, "--out", run, "--resume", "--set", *FAST],
                                              d / f"{name}-R.log")
            assert time.monotonic() < deadline, "the killed runs took more than 400 s"
            time.sleep(0.005)
        for (name, tag), proc in procs.items():
            if tag in "AR":
                log = d / f"{name}-{tag}.log"
                assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return d, facts


def _check_the_kill(facts: dict, epochs: int) -> None:
    assert facts["alive"] and facts["returncode"] == -signal.SIGKILL, "not killed mid-run"
    assert facts["errors"] == {}, facts["errors"]  # every file left behind reads cleanly
    files = facts["files"]
    assert set(files) - {"tmp"} == {"config.yaml", "metrics.jsonl", "checkpoint.pt"}, files
    epoch = files["checkpoint.pt"]
    assert 1 <= epoch < epochs and files["config.yaml"] == epochs
    # epoch 2 has no metrics line yet, or (killed between its line and its checkpoint) one
    # line that --resume drops
    assert files["metrics.jsonl"] in ([*range(1, epoch + 1)], [*range(1, epoch + 2)])
    assert all(t.startswith(".") and t.endswith(".tmp") for t in files.get("tmp", []))


# ---------------------------------------------------------------------------- SIGKILL + resume
def test_sigkill_train_mid_epoch_then_resume_is_bit_identical(killed_runs):
    d, facts = killed_runs
    _check_the_kill(facts["train"], epochs=2)
    assert_same_run(d / "train-A", d / "train-B")
    assert [m["epoch"] for m in io.read_jsonl(d / "train-B" / "metrics.jsonl")] == [1, 2]


def test_sigkill_score_mid_epoch_then_resume_is_bit_identical(killed_runs):
    d, facts = killed_runs
    _check_the_kill(facts["score"], epochs=3)
    a, b = d / "score-A", d / "score-B"
    assert_same_run(a, b)
    sa, sb = io.np_load(a / "scores.npz"), io.np_load(b / "scores.npz")
    assert sorted(sa) == sorted(sb) == sorted(["index", "labels", "aign", "el2n", "grand",
                                               "forgetting", "aum", "loss", "aign_per_epoch",
                                               "prob_per_epoch", "features", "meta"])
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k
    assert ScoreTable.load(b / "scores.npz").aign_per_epoch.shape[1] == 3


# ---------------------------------------------------------------------------- atomic writes
_WRITER = r"""
import os, sys, time
from pathlib import Path
import numpy as np, torch
from samplewise import io
top = Path(sys.argv[1])
def write(kind, d, v):
    if kind == "torch":
        io.torch_save({"v": torch.full((300_000,), float(v))}, d / "f.pt")
    elif kind == "npz":
        io.np_savez(d / "f.npz", v=np.full(300_000, v))
    elif kind == "npy":
        io.np_save(d / "f.npy", np.full(300_000, v))
    elif kind == "json":
        io.write_json(d / "f.json", {"v": [v] * 50_000})
    elif kind == "jsonl":
        io.append_jsonl(d / "f.jsonl", {"v": v})
for kind in sys.argv[2:]:
    if os.fork() == 0:  # one process per writer, each to be SIGKILLed by the test
        d = top / kind
        write(kind, d, 1)
        def half_written_then_hang(fd):
            # version 2 sits in the temporary file: cut it in half (as a write cut short leaves
            # it), say so, and wait for the SIGKILL that comes before the rename
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            (d / "READY").write_text(str(os.getpid()))
            time.sleep(600)
        io.os.fsync = half_written_then_hang
        write(kind, d, 2)
        os._exit(3)
time.sleep(600)
"""

_READ = {
    "torch": ("f.pt", lambda p: io.torch_load(p)["v"].unique().tolist()),
    "npz": ("f.npz", lambda p: np.unique(io.np_load(p)["v"]).tolist()),
    "npy": ("f.npy", lambda p: np.unique(io.np_load(p)).tolist()),
    "json": ("f.json", lambda p: sorted(set(json.loads(p.read_text())["v"]))),
    "jsonl": ("f.jsonl", lambda p: [m["v"] for m in io.read_jsonl(p)]),
}


def test_sigkill_inside_a_write_leaves_the_old_file(tmp_path):
    """Each writer is SIGKILLed with half of the new version written: the target still holds
    the whole old version; only a dot-named temporary file is left over."""
    for kind in _READ:
        (tmp_path / kind).mkdir()
    parent = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), *_READ], env=ENV,
                              stderr=subprocess.PIPE)
    try:
        for kind, (name, read) in _READ.items():
            d, deadline = tmp_path / kind, time.monotonic() + 120
            while not (d / "READY").exists() or not (d / "READY").read_text():
                assert parent.poll() is None, parent.stderr.read().decode()
                assert time.monotonic() < deadline, f"{kind}: the writer never reached the rename"
                time.sleep(0.01)
            os.kill(int((d / "READY").read_text()), signal.SIGKILL)
            assert read(d / name) == [1], kind
            left = sorted(p.name for p in d.iterdir() if p.name not in (name, "READY"))
            assert len(left) == 1 and left[0].startswith(f".{name}.") and left[0].endswith(".tmp")
            assert (d / left[0]).stat().st_size > 0
    finally:
        parent.kill()
        parent.wait(timeout=60)


@pytest.mark.parametrize("kind", sorted(_READ))
def test_a_failed_write_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch, kind):
    """An exception at the rename (disk full, ...) keeps the old file and removes the temp."""
    name, read = _READ[kind]
    write = {
        "torch": lambda v: io.torch_save({"v": torch.full((10,), float(v))}, tmp_path / name),
        "npz": lambda v: io.np_savez(tmp_path / name, v=np.full(10, v)),
        "npy": lambda v: io.np_save(tmp_path / name, np.full(10, v)),
        "json": lambda v: io.write_json(tmp_path / name, {"v": [v]}),
        "jsonl": lambda v: io.append_jsonl(tmp_path / name, {"v": v}),
    }[kind]
    write(1)
    before = (tmp_path / name).read_bytes()

    def no_space(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", no_space)
    with pytest.raises(OSError, match="No space left"):
        write(2)
    assert (tmp_path / name).read_bytes() == before and read(tmp_path / name) == [1]
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_written_files_get_the_usual_permissions(tmp_path):
    """Temporary files are private (0600); the renamed result must get 0666 & ~umask."""
    io.write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask


# ---------------------------------------------------------------------------- damaged files
@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """A real run directory, score file and subset (tiny, in-process)."""
    from samplewise.hardness.scoring import score
    d = tmp_path_factory.mktemp("outputs")
    cfg = TrainConfig(dataset="digits", model="mlp", epochs=2, train_size=300, eval_n=20,
                      eval_steps=1, monitor_steps=1, progress=False)
    score(cfg, d / "run")
    assert main(["-q", "select", "--scores", str(d / "run" / "scores.npz"), "--method",
                 "easycore", "--fraction", "0.3", "--out", str(d / "subset.npy")]) == 0
    return d


def _readers(d: Path) -> dict:
    from samplewise.data import load_dataset
    from samplewise.formats.subset import read_subset
    bundle = load_dataset("digits", train_size=300)
    return {
        "run/checkpoint.pt": lambda p: io.torch_load(p, "checkpoint"),
        "run/model.pt": lambda p: load_model(p),
        "run/scores.npz": lambda p: ScoreTable.load(p),
        "run/metrics.jsonl": lambda p: io.read_jsonl(p),
        "subset.npy": lambda p: read_subset(p, bundle),
        "subset.json": lambda p: read_subset(p.with_suffix(".npy")),
    }


def _whole_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("name", ["run/checkpoint.pt", "run/model.pt", "run/scores.npz",
                                  "run/metrics.jsonl", "subset.npy", "subset.json"])
def test_truncated_outputs_are_one_clear_error(outputs, tmp_path, name):
    read = _readers(outputs)[name]
    data = (outputs / name).read_bytes()
    read(outputs / name)  # the intact file reads
    cuts = [0, 1, 7, len(data) // 3, len(data) // 2, len(data) - 2]
    if name.endswith(".jsonl"):  # a cut at a line's end is a valid shorter file: cut inside
        tails = {c: data[:c].rsplit(b"\n", 1)[-1] for c in cuts}
        cuts = [c for c in cuts if c == 0 or (tails[c].strip() and not _whole_json(tails[c]))]
        assert len(cuts) >= 3
    for cut in cuts:
        bad = tmp_path / Path(name).name
        bad.write_bytes(data[:cut])
        if name == "subset.json":  # the summary is read next to its subset
            (tmp_path / "subset.npy").write_bytes((outputs / "subset.npy").read_bytes())
        if cut == 0 and name.endswith(".jsonl"):
            assert read(bad) == []  # an empty metrics file: no epoch finished yet
            continue
        with pytest.raises(SamplewiseError) as err:
            read(bad)
        assert "\n" not in str(err.value) and str(bad.name) in str(err.value), (cut, err.value)


def test_a_flipped_byte_in_the_weights_is_caught(tmp_path):
    """torch.load never checks the zip CRC-32s; samplewise does, so damaged weights do not
    load silently."""
    import zipfile
    from samplewise.data import load_dataset
    save_model(tmp_path / "m.pt", create_model("mlp", load_dataset("digits").card))
    with zipfile.ZipFile(tmp_path / "m.pt") as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)  # the largest weight tensor
    raw = bytearray((tmp_path / "m.pt").read_bytes())
    # local header: 30 bytes + name + extra field, then the member's bytes (stored, not deflated)
    head = info.header_offset
    name_len, extra_len = np.frombuffer(bytes(raw[head + 26:head + 30]), "<u2")
    start = head + 30 + int(name_len) + int(extra_len)
    raw[start + info.file_size // 2] ^= 0x01  # one bit of one float
    (tmp_path / "m.pt").write_bytes(bytes(raw))
    with pytest.raises(SamplewiseError) as err:
        load_model(tmp_path / "m.pt")
    assert str(err.value) == (f"{tmp_path / 'm.pt'}: cannot read model file (corrupt, truncated "
                              f"or not a samplewise file: checksum mismatch in {info.filename})")


def test_resume_of_a_finished_run_with_a_damaged_result_json(outputs, tmp_path, capsys):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(outputs / "run", run)
    data = (run / "result.json").read_bytes()
    (run / "result.json").write_bytes(data[: len(data) // 2])
    code = main(["-q", "train", "--model", "mlp", "--epochs", "2", "--train-size", "300",
                 "--out", str(run), "--resume", "--set", "eval_n=20", "eval_steps=1",
                 "monitor_steps=1"])  # the run's own recipe: another one is refused first
    err = capsys.readouterr().err.strip()
    if code == 0:  # recovered: the result was evaluated again from the checkpoint
        assert 0 <= json.loads((run / "result.json").read_text())["clean_acc"] <= 1
    else:  # or refused in one line naming the file
        assert code == 2 and len(err.splitlines()) == 1
        assert err.startswith("samplewise: error: ") and "result.json" in err


# ---------------------------------------------------------------------------- numerical faults
def test_nan_loss_stops_naming_epoch_and_step_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                                 capsys):
    """From epoch 2 the learning rate is multiplied by 1e30 (multistep, gamma=1e30): the
    weights blow up at the first step of epoch 2 and the loss is NaN at its second step."""
    out = tmp_path / "nan"
    code = main(["-q", "train", "--model", "mlp", "--epochs", "2", "--out", str(out), "--set",
                 "gamma=1e30", "milestones=[0.5]", *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == ("samplewise: error: loss is nan at epoch 2, step 2; stopped (the last good "
                   "checkpoint is kept)")
    state = io.torch_load(out / "checkpoint.pt", "checkpoint")
    assert state["epoch"] == 1
    weights = load_model(out / "checkpoint.pt").state_dict()
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert [m["epoch"] for m in io.read_jsonl(out / "metrics.jsonl")] == [1]
    assert not (out / "model.pt").exists() and not (out / "result.json").exists()


def _train_weights(tmp_path, name, *sets):
    out = tmp_path / name
    assert main(["-q", "train", "--model", "mlp", "--epochs", "1", "--out", str(out), "--set",
                 *FAST, *sets]) == 0
    return io.torch_load(out / "model.pt")["state_dict"], yaml.safe_load(
        (out / "config.yaml").read_text())


def test_grad_clip_flag_changes_training_and_is_recorded(tmp_path):
    plain, cfg_plain = _train_weights(tmp_path, "plain")
    tiny, cfg_tiny = _train_weights(tmp_path, "tiny", "grad_clip=1e-3")
    loose, cfg_loose = _train_weights(tmp_path, "loose", "grad_clip=1e9")
    assert cfg_plain["grad_clip"] is None
    assert cfg_tiny["grad_clip"] == 1e-3 and cfg_loose["grad_clip"] == 1e9
    assert any(not torch.equal(plain[k], tiny[k]) for k in plain)
    # clipping at a norm far above the gradient's multiplies by exactly 1: the same bits
    assert all(torch.equal(plain[k], loose[k]) for k in plain)


# ---------------------------------------------------------------------------- distill resume
class _CrashAt(Hook):
    """Raise (a stand-in for a crash) at one step of one epoch."""

    def __init__(self, epoch: int, step: int):
        self.epoch, self.step = epoch, step

    def on_batch_end(self, model, x, y, idx, out, epoch, step):
        if (epoch, step) == (self.epoch, self.step):
            raise RuntimeError("crash")


def test_distill_crash_mid_epoch_then_resume_is_bit_identical(tmp_path):
    """SAAD with ``ema`` keeps a per-sample EMA in the objective's state: it must survive."""
    from samplewise.data import load_dataset
    torch.manual_seed(1)
    save_model(tmp_path / "teacher.pt", create_model("mlp", load_dataset("digits").card))
    cfg = TrainConfig(dataset="digits", model="mlp", objective="saad-measured",
                      objective_args={"ema": 0.9},
                      teacher=str(tmp_path / "teacher.pt"), epochs=3, attack_steps=2,
                      train_size=400, eval_n=50, eval_steps=2, monitor_steps=1, progress=False)
    # the same hooks in every run: checkpoints store hook states by position
    full = run_training(cfg, tmp_path / "full", hooks=[_CrashAt(epoch=-1, step=-1)])
    with pytest.raises(RuntimeError, match="crash"):
        run_training(cfg, tmp_path / "cut", hooks=[_CrashAt(epoch=1, step=2)])
    assert io.torch_load(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 1
    resumed = run_training(cfg, tmp_path / "cut", resume=True, hooks=[_CrashAt(epoch=-1, step=-1)])
    assert_same_run(tmp_path / "full", tmp_path / "cut")
    assert {k: v for k, v in full.items() if k not in TIMING} == \
           {k: v for k, v in resumed.items() if k not in TIMING}
    ema = [io.torch_load(tmp_path / d / "checkpoint.pt")["objective"] for d in ("full", "cut")]
    assert set(ema[0]) == set(ema[1]) == {"ema_values", "ema_seen"}
    assert all(torch.equal(ema[0][k], ema[1][k]) for k in ema[0])
    assert ema[0]["ema_seen"].any()


def test_resume_of_a_run_killed_in_its_first_epoch_starts_over(tmp_path):
    cfg = TrainConfig(dataset="digits", model="mlp", epochs=2, eval_n=20, eval_steps=1,
                      monitor_steps=1, progress=False)
    full = run_training(cfg, tmp_path / "full", hooks=[_CrashAt(epoch=-1, step=-1)])
    with pytest.raises(RuntimeError, match="crash"):
        run_training(cfg, tmp_path / "cut", hooks=[_CrashAt(epoch=0, step=3)])
    assert (tmp_path / "cut" / "config.yaml").exists()
    resumed = run_training(cfg, tmp_path / "cut", resume=True, hooks=[_CrashAt(epoch=-1, step=-1)])
    assert resumed["clean_acc"] == full["clean_acc"]
    assert_same_run(tmp_path / "full", tmp_path / "cut")


# ---------------------------------------------------------------------------- property tests
_KEYS = st.sampled_from(sorted(TrainConfig.__dataclass_fields__) + ["bogus", "", " lr", "x.y"])
_RAW = st.one_of(
    st.text(max_size=24),
    st.sampled_from(["1e-3", "1E5", ".nan", ".inf", "-.inf", "0x1f", "true", "null", "~", "[]",
                     "{}", "[0.5, 2]", "{width:2}", "{a: {b:1}}", "!!python/name:os.system",
                     "&a [*a]", "'", "[", "{", "1_000", "0o17", "2001-12-14", "- 1"]),
    st.integers(-10**30, 10**30).map(str),
    st.floats().map(repr))
_OVERRIDE = st.one_of(st.builds(lambda k, v: f"{k}={v}", _KEYS, _RAW), st.text(max_size=30))


@settings(max_examples=400, deadline=None)
@given(st.lists(_OVERRIDE, max_size=4))
def test_any_set_overrides_give_a_config_or_our_error(overrides):
    """The ``--set`` path: any KEY=VALUE strings give a checked config or one SamplewiseError."""
    try:
        cfg = load_config(overrides=overrides)
    except SamplewiseError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(cfg, TrainConfig) and cfg.epochs > 0 and cfg.batch_size > 0


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    """Where the fuzz tests write their damaged files (removed with pytest's other temp dirs)."""
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def real_files(outputs):
    return {"scores": (outputs / "run" / "scores.npz").read_bytes(),
            "model": (outputs / "run" / "model.pt").read_bytes()}


def _damage(data: bytes, edits, cut) -> bytes:
    b = bytearray(data)
    for pos, value in edits:
        b[pos % len(b)] = value
    return bytes(b[: max(1, int(cut * len(b)))]) if cut is not None else bytes(b)


_EDITS = st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), min_size=1, max_size=8)
_CUT = st.one_of(st.none(), st.floats(0, 1, exclude_max=True))
_FUZZ = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(edits=_EDITS, cut=_CUT)
def test_damaged_score_file_loads_or_raises_our_error(real_files, fuzz_dir, edits, cut):
    path = fuzz_dir / "scores.npz"
    path.write_bytes(_damage(real_files["scores"], edits, cut))
    try:
        table = ScoreTable.load(path)
    except SamplewiseError as exc:
        assert "\n" not in str(exc)
        return
    assert len(table) == 300  # damage the format tolerates (e.g. in zip padding)


@_FUZZ
@given(edits=_EDITS, cut=_CUT)
def test_damaged_model_file_loads_or_raises_our_error(real_files, fuzz_dir, edits, cut):
    path = fuzz_dir / "model.pt"
    path.write_bytes(_damage(real_files["model"], edits, cut))
    try:
        model = load_model(path)
    except SamplewiseError as exc:
        assert "\n" not in str(exc)
        return
    assert model.arch == "mlp"


def test_subset_and_summary_written_apart_are_detected(tmp_path):
    """select writes the .npy and its .json one after the other: a kill between the two renames
    can pair a new subset with an old summary; the checksum in the summary catches it."""
    from samplewise.data import load_dataset
    from samplewise.errors import SamplewiseError
    from samplewise.formats.subset import read_subset, write_subset

    bundle = load_dataset("digits")
    path = tmp_path / "s.npy"
    old = bundle.train.index[:100].numpy()
    write_subset(path, old, {"fingerprint": bundle.fingerprint, "dataset": "digits"})
    assert len(read_subset(path, bundle).indices) == 100
    summary = path.with_suffix(".json").read_bytes()
    write_subset(path, bundle.train.index[100:250].numpy(), {"fingerprint": bundle.fingerprint})
    path.with_suffix(".json").write_bytes(summary)  # the state a kill between the renames leaves
    with pytest.raises(SamplewiseError, match="does not match its summary"):
        read_subset(path, bundle)
