"""Studies: grids of training runs -> tables and plots.

- :mod:`samplewise.studies.grid`: the generic machinery (study configs, cells with stable ids,
  resumable cell runs, ``--cells i/n`` shares).
- :mod:`samplewise.studies.tables`: results.csv / .md / .json (mean ± std over seeds).
- :mod:`samplewise.studies.coreset_study`: the EasyCore coreset study (methods.md §3).
- :mod:`samplewise.studies.plots`: the figures.

Example:
    >>> from samplewise.studies import run_coreset_study
    >>> run_coreset_study("configs/study-coreset-digits.yaml", "runs/study")
"""

from .coreset_study import load_coreset_config, run_coreset_study
from .grid import Axis, Cell, EvalSpec, StudyConfig, StudySpec, load_study, parse_share, share_of

__all__ = ["Axis", "Cell", "EvalSpec", "StudyConfig", "StudySpec", "load_coreset_config",
           "load_study", "parse_share", "run_coreset_study", "share_of"]
