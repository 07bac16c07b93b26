"""The distillation study (methods.md §4, issue #4): does student robustness follow the
teacher's robustness or the transferability of the student's adversarial examples (TAS)?

Teachers × distillation methods × seeds, each cell one student run (``OUT/cells/<id>``) with
``cfg.teacher`` set to its teacher. A teacher is either given (``path:`` a model file, a run
directory or ``robustbench:ID``) or trained by the study first (``train:`` TrainConfig keys over
``base``, in ``OUT/teachers/<name>``; resumable, trained by whichever process needs it first,
under a lock). The config::

    study: distill
    base: {dataset: digits, model: mlp, epochs: 2, ...}     # the student recipe (TrainConfig)
    teachers:
      - {name: wide-trades, train: {model: cnn-small, model_args: {width: 4}, objective: trades}}
      - {name: given, path: runs/teacher/model.pt}
    grid: {methods: [ard, rslad, saad, pgd-at], teachers: [wide-trades, given]}  # teachers: all
    method_settings: {saad: {swa_start: 0.475}}    # optional: a method's own recipe over base
    seeds: [0, 1, 2]
    eval: {n: 1000, pgd_steps: 20, autoattack: false, autoattack_n: 200}

A method that takes no teacher (e.g. ``pgd-at``) is the student trained alone: one cell per
seed with teacher ``none`` (``none-pgd-at-s0``), the reference line of the plots.

Per teacher: clean / PGD / AutoAttack (when asked for) accuracy on the fixed test slices, cached
in ``OUT/teachers/<name>/eval.json``. Per cell: the grid's clean / PGD / AutoAttack, the
training TAS (mean ``tas`` of the last epoch in ``metrics.jsonl``) and the held-out TAS of
:func:`samplewise.transfer.transfer_rate` (PGD-10 by the student on the ``eval.n`` test slice,
cached as ``transfer.json``).

Example:
    >>> summary = run_distill_study("configs/study-distill-digits.yaml", "runs/distill")
    >>> summary["results"]            # runs/distill/results.md, .csv, .json and the plots

The package's modules: :mod:`~samplewise.studies.distill.config` (constants, teacher specs,
:func:`load_distill_config`), :mod:`~samplewise.studies.distill.teachers` (training and
evaluating teachers), :mod:`~samplewise.studies.distill.cells` (the cells, training and
held-out TAS), :mod:`~samplewise.studies.distill.results` (results.csv / .md / .json),
:mod:`~samplewise.studies.distill.plots` (the figures) and
:mod:`~samplewise.studies.distill.run` (:func:`run_distill_study`).
"""

from .config import load_distill_config
from .run import run_distill_study

# Everything else (cells, teachers, results, plots) is imported from its module.
__all__ = ["load_distill_config", "run_distill_study"]
