"""Plain records the explainers and scorers work on: a window of tokens with activations.

A feature database hands out examples as objects with ``tokens`` (decoded strings) and ``values``
(one activation per token); :func:`as_example` turns any such object into an :class:`Example`.
:class:`FeatureExamples` holds one feature's three kinds of examples (``top``: the highest-
activating windows; ``quantile``: windows sampled across the activation range; ``negative``:
windows where the feature stays at zero). :func:`split` keeps explaining and scoring apart:
explanations are written from one set of examples, scores use the others.

Tokens are shown the way delphi marks them: an activating token ``t`` becomes ``<<t>>`` and a run
of adjacent activating tokens is marked once (``<<New York>>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mechscope.errors import MechscopeError

__all__ = ["Example", "FeatureExamples", "Split", "as_example", "mark", "split", "text"]


@dataclass(frozen=True)
class Example:
    """One window: its decoded tokens and one activation per token."""

    tokens: tuple[str, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.values):
            raise MechscopeError(
                f"example has {len(self.tokens)} tokens but {len(self.values)} activations: "
                "rebuild the feature database"
            )

    @property
    def max(self) -> float:
        return max(self.values, default=0.0)


@dataclass(frozen=True)
class FeatureExamples:
    """One feature's examples by kind; ``source`` and ``index`` name it in the database."""

    source: str
    index: int
    top: tuple[Example, ...] = ()
    quantile: tuple[Example, ...] = ()
    negative: tuple[Example, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Split:
    """Examples for writing the explanation and held-out examples for scoring it."""

    explain: tuple[Example, ...]
    activating: tuple[Example, ...]  # held out: not shown to the explainer
    negative: tuple[Example, ...]


def as_example(record: Any) -> Example:
    """An :class:`Example` from any object with ``tokens`` and ``values`` (attributes or keys)."""
    get = record.get if isinstance(record, dict) else lambda key: getattr(record, key)
    return Example(tuple(str(t) for t in get("tokens")), tuple(float(v) for v in get("values")))


def split(feature: FeatureExamples, n_explain: int = 10, n_score: int = 10) -> Split:
    """Every other top example (up to ``n_explain``) explains; the rest and the quantile
    examples (up to ``n_score`` activating windows) and the negatives (up to ``n_score``) score.

    Interleaving keeps both halves spread over the top of the range instead of giving the
    explainer all of the strongest windows.
    """
    top = [e for e in feature.top if e.max > 0]
    explain = top[0::2][:n_explain]
    held = top[1::2] + [e for e in feature.quantile if e.max > 0]
    held = _spread(held, n_score)
    negative = [e for e in feature.negative if e.max <= 0][:n_score]
    return Split(tuple(explain), tuple(held), tuple(negative))


def _spread(items: Sequence[Example], n: int) -> list[Example]:
    """Up to ``n`` items taken evenly across ``items`` (all of them when there are few)."""
    if len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def text(example: Example) -> str:
    """The window's text, tokens joined as decoded."""
    return "".join(example.tokens)


def mark(tokens: Sequence[str], marked: Sequence[bool]) -> str:
    """The text with each run of marked tokens wrapped in ``<<`` ``>>``."""
    out: list[str] = []
    inside = False
    for token, on in zip(tokens, marked, strict=True):
        if on and not inside:
            # keep a token's leading space outside the marks: " <<word>>" reads as a word
            stripped = token.lstrip()
            out.append(token[: len(token) - len(stripped)] + "<<" + stripped)
            inside = True
            continue
        if not on and inside:
            out.append(">>")
            inside = False
        out.append(token)
    if inside:
        out.append(">>")
    return "".join(out)


def mark_active(example: Example, threshold: float = 0.0) -> str:
    """The window's text with its activating tokens (value above ``threshold``) marked."""
    return mark(example.tokens, [v > threshold for v in example.values])
