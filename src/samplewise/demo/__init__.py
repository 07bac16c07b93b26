"""``samplewise demo``: EasyCore and SAAD end to end in a few minutes on two CPU cores (issue #7).

One call runs, each stage in its own run directory ``OUT/<stage>/``:

1. ``scoring``: a standard training that records every sample's AIGN (and EL2N, ...);
2. ``coreset-full``, ``coreset-easycore``, ``coreset-random``, ``coreset-el2n``: standard
   training (the regime where the studies saw EasyCore's advantage, docs/results.md §5) on the
   full training set and on three 30% coresets (``OUT/subsets/<selector>.npy``), each also read
   with PGD-20 at the radii of ``eps_ladder`` (card ε/4 and ε/2; ``OUT/<stage>/ladder.json``);
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
    >>> results["coreset"]["methods"]["easycore"]["ladder"]   # PGD-20 at each radius
    >>> run_demo("/tmp/demo-quick", quick=True)                # seconds: checks the machinery

The package reads top to bottom: :mod:`~samplewise.demo.settings` (what a demo depends on:
settings, presets, file names), :mod:`~samplewise.demo.run` (:func:`run_demo`, the plan and
each stage), :mod:`~samplewise.demo.report` (results.json, the tables, the reading, report.md)
and :mod:`~samplewise.demo.plots` (the PNG plots).
"""

from .run import run_demo
from .settings import DemoSettings, demo_settings

__all__ = ["DemoSettings", "demo_settings", "run_demo"]
