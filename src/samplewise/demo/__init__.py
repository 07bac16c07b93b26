"""``samplewise demo``: EasyCore and SAAD end to end in a few minutes on two CPU cores (issue #7).

One call runs, each stage in its own run directory ``OUT/<stage>/``:

1. ``scoring``: a standard training that records every sample's AIGN (and EL2N, ...);
2. ``coreset-full``, ``coreset-easycore``, ``coreset-random``, ``coreset-el2n``: PGD-AT on the
   full training set and on three coresets of one fraction (``OUT/subsets/<selector>.npy``);
3. ``teacher`` (a wider model, adversarially trained), ``student-alone`` (the student trained
   with PGD-AT, no teacher) and ``distill-ard``, ``distill-rslad``, ``distill-saad``;

then evaluates clean and PGD-20 accuracy at the dataset card's ε on the fixed test slice (every
run's ``result.json``), reads each student's TAS from the last line of its ``metrics.jsonl``,
and writes ``OUT/report.md`` (two Markdown tables, the settings, a reading generated from the
numbers), ``OUT/results.json`` and three PNG plots, all atomically. ``resume=True`` skips the
finished stages (and continues an interrupted one from its checkpoint); a rerun of a finished
demo rewrites nothing whose content did not change.

Example:
    >>> results = run_demo("runs/demo")                        # digits, about five minutes
    >>> results["coreset"]["methods"]["easycore"]["robust_acc"]
    >>> run_demo("/tmp/demo-quick", quick=True)                # seconds: checks the machinery

The package's modules: :mod:`~samplewise.demo.settings` (settings, presets, file names),
:mod:`~samplewise.demo.stages` (the plan and each stage's run and record),
:mod:`~samplewise.demo.run` (:func:`run_demo`), :mod:`~samplewise.demo.results` (results.json,
tables, the reading), :mod:`~samplewise.demo.report` (writing the outputs) and
:mod:`~samplewise.demo.plots` (the PNG plots).
"""

from .plots import plot_aign, plot_coreset, plot_distill
from .report import report_markdown, write_outputs
from .results import assemble, coreset_table, distill_table, reading
from .run import run_demo
from .settings import (DATASETS, FORMAT, METHODS, PLOTS, PRESETS, QUICK, REPORT_FILE, RESULTS_FILE,
                       SELECTORS, SETTINGS_FILE, STAGE_FILE, DemoSettings, demo_settings)
from .stages import Stage, plan

__all__ = ["DATASETS", "FORMAT", "METHODS", "PLOTS", "PRESETS", "QUICK", "REPORT_FILE",
           "RESULTS_FILE", "SELECTORS", "SETTINGS_FILE", "STAGE_FILE", "DemoSettings", "Stage",
           "assemble", "coreset_table", "demo_settings", "distill_table", "plan", "plot_aign",
           "plot_coreset", "plot_distill", "reading", "report_markdown", "run_demo",
           "write_outputs"]
