"""The file formats samplewise writes for users, each with one writer and one reader.

- :mod:`samplewise.formats.scores`: the score file (``scores.npz``), :class:`ScoreTable` with
  its :meth:`~ScoreTable.save` and :meth:`~ScoreTable.load`;
- :mod:`samplewise.formats.subset`: the subset file (``NAME.npy`` + ``NAME.json``: dataset
  indices, summary, checksum), :func:`write_subset` and :func:`read_subset`.

Bottom layer: these modules import only :mod:`samplewise.errors` and :mod:`samplewise.io`.
"""
