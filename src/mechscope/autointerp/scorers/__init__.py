"""The scorers, one file each, all ``score(explanation, data, ctx) -> Score``."""

from __future__ import annotations

from collections.abc import Callable

from mechscope.autointerp.records import Split
from mechscope.autointerp.scorers import detection, embedding, fuzzing, simulation
from mechscope.autointerp.scorers.base import Score, ScoreContext

__all__ = ["SCORERS", "Score", "ScoreContext"]

SCORERS: dict[str, Callable[[str, Split, ScoreContext], Score]] = {
    "detection": detection.score,
    "fuzzing": fuzzing.score,
    "embedding": embedding.score,
    "simulation": simulation.score,
}
