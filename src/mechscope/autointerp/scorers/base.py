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
from mechscope.autointerp.metrics import auroc, balanced_accuracy

__all__ = ["Score", "ScoreContext", "ask_yes_no", "failed", "need"]

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


def ask_yes_no(
    ask: Callable[[list[T]], list[Reply]],
    items: Sequence[T],
    labels: Sequence[bool],
    ctx: ScoreContext,
    stream: int,
) -> Score:
    """``ask(items)`` with the items in a random order (``ctx.rng(stream)``), so that a judge call
    of several windows mixes the two kinds; the score is the AUROC of P(yes) for the ``True``
    labels against the others, ``balanced_accuracy`` thresholds P(yes) at 0.5. A failed answer
    makes the score that failure."""
    order = ctx.rng(stream).permutation(len(items))
    asked = ask([items[i] for i in order])
    replies: list[Reply] = [Reply(error="not asked")] * len(items)
    for position, i in enumerate(order):
        replies[int(i)] = asked[position]
    bad = failed(replies)
    if bad:
        return bad
    p = [r.p_yes for r in replies]
    return Score(
        auroc(p, labels),
        details={
            "balanced_accuracy": balanced_accuracy([x > 0.5 for x in p], labels),
            "n": len(p),
            "per_call": int(getattr(ctx.judge, "per_call", 1)),  # 1 for judges without it
        },
    )


def need(data_ok: bool, what: str) -> Score | None:
    """An error score when the held-out examples lack what the scorer needs."""
    return None if data_ok else Score(None, f"not enough held-out examples: {what}")
