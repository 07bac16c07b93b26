"""Per-sample hardness: score trackers and the score file format."""

from .scorefile import FORMAT, SCORE_NAMES, ScoreTable

__all__ = ["FORMAT", "SCORE_NAMES", "ScoreTable"]
