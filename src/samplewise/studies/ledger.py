"""A study's ledger: the finished cells' results, carried from one machine to the next.

A study directory resumes on the machine that holds it. A study that outlives its machine (a
cluster's scratch wiped between jobs, a run moved to another host, a session whose disk does not
persist) keeps a *ledger* instead: one small JSON file, meant to be committed beside the study's
config, with one entry per finished cell (its recipe and its results row) and, for a
distillation study, one per teacher (its recipe and its evaluation). A run given
``--ledger FILE`` takes every cell the ledger holds as finished, runs only the others, and
afterwards adds the cells it finished; a study can so be completed over several machines.

What makes an entry count for a cell, checked before anything runs (any mismatch is one clear
:class:`~samplewise.errors.SamplewiseError`, never a silent rerun or a mixed table):

- the ledger's study and evaluation settings (the ``eval`` section but its batch size) are the
  config's;
- the cell's recipe (:func:`samplewise.config.run_differences`, the rule behind every resume) is
  the recorded one, the teacher compared by its name and its own recorded recipe rather than by
  its path;
- a coreset cell's subset has the recorded checksum: the scoring run made again on this machine
  must select the same samples.

The file is written atomically and merged under a lock, so workers sharing a study may all
write it. Format ``samplewise.ledger/1``::

    {"format": ..., "study": "coreset", "eval": {...},
     "teachers": {name: {"recipe": {...}, "eval": {...}, "files": {file name: sha256}}},
     "cells": {cell id: {"recipe": {...}, "row": {...}}}}

A teacher the study trained also leaves its run (:data:`TEACHER_FILES`: weights, config and
result) beside the ledger, in ``<ledger stem>.teachers/<name>/``, with each file's SHA-256 in
``files``: a later machine restores the teacher from there instead of training it again (hours,
for a strong teacher), and every student of the study learns from the same weights, whatever
CPU trained them. Commit that folder with the ledger.

Example:
    >>> led = read_ledger("docs/data/study-coreset-fmnist-at-long-ledger.json", "coreset", ev)
    >>> done = led.rows_for(cells)          # cell id -> results row, each checked
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from .. import io
from ..config import read_yaml, recipe_of, run_differences
from ..errors import SamplewiseError
from ..formats.subset import checksum, read_subset
from .grid import Cell, EvalSpec, cell_dir, file_lock, needs_work

FORMAT = "samplewise.ledger/1"
#: the files of a trained teacher's run that the ledger carries (enough for a finished run)
TEACHER_FILES = ("model.pt", "config.yaml", "result.json")
#: recipe keys that name a location rather than what is trained: compared by other means
LOCATION_KEYS = ("teacher",)


def eval_settings(ev: EvalSpec) -> dict:
    """The evaluation settings a ledger's rows were made with (the batch size only changes the
    float rounding, so it is left out)."""
    settings = dataclasses.asdict(ev)
    settings.pop("batch_size")
    return json.loads(json.dumps(settings, default=str))


def run_recipe(run_dir) -> dict:
    """The recipe a finished run directory was trained with (from its ``config.yaml``), without
    the location keys: the ledger entry's ``recipe``."""
    saved = read_yaml(Path(run_dir) / "config.yaml")
    return {k: v for k, v in recipe_of(saved, ()).items() if k not in LOCATION_KEYS}


def _recipe_mismatch(recorded: dict, cfg) -> list[str]:
    return [k for k in run_differences(recorded, cfg) if k not in LOCATION_KEYS]


@dataclass
class Ledger:
    """A ledger read from ``path`` (empty when the file does not exist yet)."""
    path: Path
    study: str
    eval: dict
    cells: dict = field(default_factory=dict)
    teachers: dict = field(default_factory=dict)
    #: a coreset study's subsets (``{name: {"indices": encoded, "summary": {...}}}``) and how
    #: they were made (``{"made_by": {...}, "scoring": {...}}``): a later machine takes them
    #: as they are instead of making the scoring run again
    subsets: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)

    def _refuse(self, what: str) -> SamplewiseError:
        return SamplewiseError(f"ledger {self.path}: {what}; use another --ledger (or none)")

    def rows_for(self, cells: Sequence[Cell]) -> dict[str, dict]:
        """``{cell id: row}`` for the ``cells`` the ledger holds, each checked against the cell's
        recipe and, for a coreset cell, its subset's checksum."""
        rows = {}
        for cell in cells:
            entry = self.cells.get(cell.id)
            if entry is None:
                continue
            recorded = entry["recipe"]
            diff = _recipe_mismatch(recorded, cell.cfg)
            if diff:
                raise self._refuse(f"cell {cell.id} was run with " + ", ".join(
                    f"{k}={recorded[k]!r}" for k in diff) + ", but the study now asks for " +
                    ", ".join(f"{k}={recipe_of(cell.cfg)[k]!r}" for k in diff))
            if cell.cfg.subset is not None and "subset_checksum" in recorded:
                now = checksum(read_subset(cell.cfg.subset).indices)
                if now != recorded["subset_checksum"]:
                    raise self._refuse(
                        f"cell {cell.id} trained on the subset with checksum "
                        f"{recorded['subset_checksum']}, but this study's {cell.cfg.subset} has "
                        f"{now} (the scoring run did not select the same samples)")
            rows[cell.id] = dict(entry["row"])
        return rows

    def subset(self, name: str, made_by: dict) -> Optional[tuple]:
        """``(indices, summary)`` of the recorded subset ``name`` (None if absent), once the
        recorded way of making the subsets (scoring run, selection settings) is checked to be
        ``made_by``."""
        entry = self.subsets.get(name)
        if entry is None:
            return None
        recorded = self.selection.get("made_by")
        if recorded != made_by:
            diff = sorted(k for k in {*(recorded or {}), *made_by}
                          if (recorded or {}).get(k) != made_by.get(k))
            raise self._refuse(f"its subsets were made with other scoring or selection settings "
                               f"({', '.join(diff)})")
        indices = decode_indices(entry["indices"])
        if checksum(indices) != entry["summary"].get("checksum"):
            raise _damaged(self.path, f"subset {name} does not match its checksum")
        return indices, dict(entry["summary"])

    def eps(self) -> Optional[float]:
        """The ε the ledger's cells were trained and evaluated at (their resolved recipe's)."""
        return next((e["recipe"].get("eps") for e in self.cells.values()), None)

    def teacher_eval(self, name: str, train_cfg=None, path: Optional[str] = None
                     ) -> Optional[dict]:
        """The recorded evaluation of teacher ``name`` (None if absent), once its recorded
        recipe is checked against ``train_cfg`` (a trained teacher) or ``path`` (a given one)."""
        entry = self.teachers.get(name)
        if entry is None:
            return None
        recorded = entry["recipe"]
        if train_cfg is not None:
            diff = _recipe_mismatch(recorded, train_cfg)
            if diff:
                raise self._refuse(f"teacher {name} was trained with " + ", ".join(
                    f"{k}={recorded[k]!r}" for k in diff) + ", but the study now asks for " +
                    ", ".join(f"{k}={recipe_of(train_cfg)[k]!r}" for k in diff))
        elif recorded.get("path") != path:
            raise self._refuse(f"teacher {name} was the file {recorded.get('path')!r}, but the "
                               f"study now gives {path!r}")
        return dict(entry["eval"])

    def teacher_run(self, name: str) -> Optional[dict[str, bytes]]:
        """The recorded run of trained teacher ``name`` as ``{file name: content}`` (None when
        the ledger carries no files for it), each file checked against its recorded SHA-256.
        Check the teacher's recipe first (:meth:`teacher_eval`)."""
        files = (self.teachers.get(name) or {}).get("files")
        if not files:
            return None
        folder = teacher_files_dir(self.path, name)
        out = {}
        for fname, digest in files.items():
            try:
                data = (folder / fname).read_bytes()
            except OSError:
                raise _damaged(self.path, f"teacher {name}'s {folder / fname} is missing; "
                               "commit the ledger's .teachers folder with it") from None
            if hashlib.sha256(data).hexdigest() != digest:
                raise _damaged(self.path, f"teacher {name}'s {folder / fname} does not match "
                               "its SHA-256")
            out[fname] = data
        return out


def teacher_files_dir(ledger_path, name: str) -> Path:
    """Where the ledger at ``ledger_path`` keeps trained teacher ``name``'s run."""
    path = Path(ledger_path)
    return path.parent / f"{path.stem}.teachers" / name


def _carry_teacher_run(ledger_path: Path, name: str, run_dir, recorded: Optional[dict]) -> dict:
    """Copy teacher ``name``'s run files from ``run_dir`` beside the ledger (unless the same
    files are there already); returns their ``{file name: sha256}``."""
    run_dir, folder = Path(run_dir), teacher_files_dir(ledger_path, name)
    contents = {f: (run_dir / f).read_bytes() for f in TEACHER_FILES}
    files = {f: hashlib.sha256(data).hexdigest() for f, data in contents.items()}
    if (recorded or {}).get("files") != files or not all((folder / f).is_file() for f in files):
        for fname, data in contents.items():
            io.write_bytes(folder / fname, data)
    return files


def encode_indices(indices) -> str:
    """Sorted dataset indices as text: their first value and gaps, as little-endian uint32,
    zlib-compressed, base64 (a 5,000-sample subset of 60,000 takes about 7 kB)."""
    idx = np.sort(np.asarray(indices, dtype=np.int64))
    gaps = np.diff(idx, prepend=0).astype("<u4")
    return base64.b64encode(zlib.compress(gaps.tobytes(), 9)).decode("ascii")


def decode_indices(text: str) -> np.ndarray:
    """The indices :func:`encode_indices` wrote."""
    try:
        gaps = np.frombuffer(zlib.decompress(base64.b64decode(text, validate=True)), dtype="<u4")
    except (ValueError, zlib.error) as exc:
        raise SamplewiseError(f"a ledger subset is not readable ({exc})") from None
    return np.cumsum(gaps.astype(np.int64))


def _damaged(path: Path, why: str) -> SamplewiseError:
    return SamplewiseError(f"ledger {path} is damaged ({why}); restore it from version control "
                           "or use another --ledger")


def _parse(path: Path, raw) -> dict:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise _damaged(path, f"not a {FORMAT} file")
    for key in ("study", "eval", "cells", "teachers"):
        if key not in raw:
            raise _damaged(path, f"no '{key}'")
    for name in ("cells", "teachers"):
        entries = raw[name]
        want = ("recipe", "row") if name == "cells" else ("recipe", "eval")
        if not isinstance(entries, dict) or not all(
                isinstance(e, dict) and all(isinstance(e.get(k), dict) for k in want)
                for e in entries.values()):
            raise _damaged(path, f"'{name}' entries must each hold {' and '.join(want)}")
    if not all(isinstance(e.get("files", {}), dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in e.get("files", {}).items())
            for e in raw["teachers"].values()):
        raise _damaged(path, "a teacher's 'files' must map file names to SHA-256 digests")
    return raw


def read_ledger(path, study: str, ev: EvalSpec) -> Ledger:
    """The ledger at ``path`` for a ``study`` evaluated as ``ev`` (empty if the file is absent).

    A file that is not a ledger, another study's, or one made with other evaluation settings
    is refused."""
    path = Path(path)
    settings = eval_settings(ev)
    if path.exists() and not path.is_file():
        raise SamplewiseError(f"--ledger {path} is not a file")
    if not path.is_file():
        return Ledger(path, study, settings)
    try:
        raw = _parse(path, json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _damaged(path, str(exc).splitlines()[0]) from None
    subsets, selection = raw.get("subsets", {}), raw.get("selection", {})
    if not isinstance(subsets, dict) or not isinstance(selection, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("indices"), str)
            and isinstance(e.get("summary"), dict) for e in subsets.values()):
        raise _damaged(path, "'subsets' entries must each hold indices and a summary")
    led = Ledger(path, raw["study"], raw["eval"], raw["cells"], raw["teachers"], subsets,
                 selection)
    if led.study != study:
        raise led._refuse(f"it holds a '{led.study}' study, not '{study}'")
    if led.eval != settings:
        diff = sorted(k for k in {*led.eval, *settings} if led.eval.get(k) != settings.get(k))
        raise led._refuse("its cells were evaluated with " + ", ".join(
            f"eval.{k}={led.eval.get(k)!r}" for k in diff) + ", but the config asks for " +
            ", ".join(f"eval.{k}={settings.get(k)!r}" for k in diff))
    return led


def record(path, study: str, ev: EvalSpec, cells: Mapping[str, dict],
           teachers: Optional[Mapping[str, dict]] = None, *, lock: Path,
           subsets: Optional[Mapping[str, tuple]] = None,
           selection: Optional[dict] = None) -> Ledger:
    """Add ``cells`` (``{id: {"recipe", "row"}}``) and ``teachers`` (``{name: {"recipe",
    "eval"}}``, with ``"run_dir"`` for a teacher trained here: its run is carried beside the
    ledger) and a coreset study's ``subsets`` (``{name: (indices, summary)}``, made as
    ``selection`` says) to the ledger at ``path`` (created if absent), atomically, holding the file
    ``lock`` (in the study directory, so that no lock file lands beside a committed ledger); an
    entry already there is replaced. Returns the merged ledger."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lock, wait=True):
        led = read_ledger(path, study, ev)
        led.cells.update({k: {"recipe": v["recipe"], "row": v["row"]} for k, v in cells.items()})
        for name, v in (teachers or {}).items():
            entry = {"recipe": v["recipe"], "eval": v["eval"]}
            if v.get("run_dir") is not None:
                entry["files"] = _carry_teacher_run(path, name, v["run_dir"],
                                                    led.teachers.get(name))
            led.teachers[name] = entry
        if subsets:
            led.subsets.update({k: {"indices": encode_indices(idx), "summary": summary}
                                for k, (idx, summary) in subsets.items()})
            led.selection = dict(selection or {})
        body = {"format": FORMAT, "study": study, "eval": led.eval,
                "teachers": dict(sorted(led.teachers.items()))}
        if led.subsets:
            body.update({"selection": led.selection, "subsets": dict(sorted(led.subsets.items()))})
        io.write_json(path, {**body, "cells": dict(sorted(led.cells.items()))})
    return led


def finished_entries(cells: Sequence[Cell], out_dir, ev: EvalSpec, rows: Sequence[dict], *,
                     skip=(), complete=None) -> dict[str, dict]:
    """Ledger entries (``{id: {"recipe", "row"}}``) of the cells finished in ``out_dir``: trained
    and evaluated as ``ev`` asks (:func:`~samplewise.studies.grid.needs_work`), and
    ``complete(cell, path)`` when given; ``rows`` are their results rows, ``skip`` the ids taken
    from a ledger already."""
    by_id = {r["cell"]: r for r in rows}
    out = {}
    for cell in cells:
        path = cell_dir(out_dir, cell)
        if cell.id in skip or cell.id not in by_id or needs_work(cell, path, ev) or \
                (complete is not None and not complete(cell, path)):
            continue
        out[cell.id] = {"recipe": run_recipe(path), "row": by_id[cell.id]}
    return out
