"""The package version, in a module of its own that imports nothing, so that ``samplewise
--version`` and ``--help`` answer without loading torch."""

__version__ = "0.1.0"
