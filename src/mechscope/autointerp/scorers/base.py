"""What every scorer takes and returns.

A scorer is ``score(explanation, data, ctx) -> Score``: ``data`` is a feature's held-out
:class:`~mechscope.autointerp.records.Split` (never the examples the explanation was written from),
``ctx`` holds the judge, the sentence embedder and the seed. A score is a number or an error with
its reason, never both: when any of its calls failed, the score is that failure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from mechscope.autointerp.backend import Reply
from mechscope.autointerp.judges import Judge

__all__ = ["Score", "ScoreContext", "failed", "per_call", "shuffled_ask"]

T = TypeVar("T")


@dataclass(frozen=True)
class Score:
    """A scorer's number (``value``) with its details, or the ``error`` that stopped it."""

    value: float | None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "error": self.error, "details": self.details}


@dataclass
class ScoreContext:
    """The judge (detection, fuzzing, simulation), the embedder (embedding) and the seed."""

    judge: Judge
    embed: Callable[[list[str]], np.ndarray] | None = None
    seed: int = 0

    def rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, *key])


def failed(replies: Sequence[Reply]) -> Score | None:
    """The error score when any reply failed, else ``None``."""
    errors = [r.error for r in replies if r.error]
    if not errors:
        return None
    return Score(None, f"{len(errors)} of {len(replies)} answers failed; first: {errors[0]}")


def shuffled_ask(
    ask: Callable[[list[T]], list[Reply]], items: Sequence[T], rng: np.random.Generator
) -> list[Reply]:
    """``ask(items)`` with the items in a random order, the replies put back in the items' order:
    a judge call of several windows then mixes activating windows with the others."""
    order = rng.permutation(len(items))
    replies = ask([items[i] for i in order])
    out: list[Reply] = [Reply(error="not asked")] * len(items)
    for position, i in enumerate(order):
        out[int(i)] = replies[position]
    return out


def per_call(ctx: ScoreContext) -> int:
    """Windows per judge call (1 for judges that have no such setting)."""
    return int(getattr(ctx.judge, "per_call", 1))


def need(data_ok: bool, what: str) -> Score | None:
    """An error score when the held-out examples lack what the scorer needs."""
    return None if data_ok else Score(None, f"not enough held-out examples: {what}")
