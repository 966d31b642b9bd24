"""Score every head with every detector: the registry :data:`DETECTORS` and :func:`head_scores`.

Pattern detectors (one file each: induction, previous_token, duplicate_token, attention_sink)
build a target mask from token ids and share one batched forward over repeated random sequences
(:mod:`mechscope.heads.patterns`), so they work on every family. Weight detectors
(copy_suppression, ov_copying, qk_copying) read the weights (:mod:`mechscope.heads.weights`).
Every score is a float tensor [layer head].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from mechscope.errors import MechscopeError
from mechscope.heads.attention_sink import sink_mask
from mechscope.heads.copy_suppression import copy_suppression_scores
from mechscope.heads.copying import ov_copying_scores, qk_copying_scores
from mechscope.heads.duplicate_token import duplicate_mask
from mechscope.heads.induction import induction_mask
from mechscope.heads.patterns import pattern_scores
from mechscope.heads.previous_token import previous_mask
from mechscope.heads.tokens import repeated_tokens
from mechscope.models.hooked import HookedModel

Tensor = torch.Tensor


@dataclass(frozen=True)
class Detector:
    """A head detector: ``kind`` "pattern" (fn: tokens -> mask) or "weights" (fn: model -> scores)."""

    name: str
    kind: Literal["pattern", "weights"]
    fn: Callable[..., Tensor]
    what: str  # one line for tables and docs


DETECTORS: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector("induction", "pattern", induction_mask, "attends to the token after the "
                 "earlier occurrence of the current token"),
        Detector("previous_token", "pattern", previous_mask, "attends to the previous position"),
        Detector("duplicate_token", "pattern", duplicate_mask, "attends to earlier occurrences "
                 "of the current token"),
        Detector("attention_sink", "pattern", sink_mask, "attends to position 0"),
        Detector("copy_suppression", "weights", copy_suppression_scores, "OV circuit lowers the "
                 "logit of the attended token (fraction of tokens in the lowest 1%)"),
        Detector("ov_copying", "weights", ov_copying_scores, "OV circuit eigenvalue copying "
                 "score"),
        Detector("qk_copying", "weights", qk_copying_scores, "QK circuit eigenvalue "
                 "same-token score"),
    )
}  # fmt: skip
DEFAULT_DETECTORS = (
    "induction",
    "previous_token",
    "duplicate_token",
    "attention_sink",
    "copy_suppression",
)


@dataclass(frozen=True)
class HeadScores:
    """Scores [layer head] per detector, and what they were measured on."""

    scores: dict[str, Tensor]
    n_seqs: int
    seq_len: int
    seed: int
    prepend_bos: bool
    meta: dict[str, Any] = field(default_factory=dict)

    def top(self, name: str, k: int = 5) -> list[tuple[int, int, float]]:
        """The k highest-scoring heads of one detector as (layer, head, score)."""
        s = self.scores[name]
        order = s.flatten().argsort(descending=True)[:k]
        return [(int(i) // s.shape[1], int(i) % s.shape[1], float(s.flatten()[i])) for i in order]

    def classification(self, k: int = 5) -> dict[str, list[dict[str, Any]]]:
        """The top k heads of each detector, JSON-ready."""
        return {
            name: [{"layer": la, "head": h, "score": v} for la, h, v in self.top(name, k)]
            for name in self.scores
        }

    def to_dict(self, k: int = 5) -> dict[str, Any]:
        """JSON-ready: each detector's [layer][head] matrix, the top ``k`` heads of each
        (``classification``) and the settings it was measured with."""
        return {
            **{name: s.tolist() for name, s in self.scores.items()},
            "classification": self.classification(k),
            "settings": {
                "n_seqs": self.n_seqs,
                "seq_len": self.seq_len,
                "seed": self.seed,
                "prepend_bos": self.prepend_bos,
            },
        }


def check_detectors(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in DETECTORS]
    if unknown or not names:
        raise MechscopeError(
            f"unknown head detector(s) {unknown or '(none given)'}; "
            f"choose from {', '.join(DETECTORS)}"
        )


def head_scores(
    model: HookedModel,
    detectors: Sequence[str] = DEFAULT_DETECTORS,
    *,
    tokens: Tensor | None = None,
    n_seqs: int = 64,
    seq_len: int = 50,
    seed: int = 0,
    prepend_bos: bool | None = None,
    batch_size: int = 64,
) -> HeadScores:
    """Score every head with each named detector.

    Pattern detectors read ``tokens`` [batch pos] (default: :func:`repeated_tokens` with
    ``n_seqs``, ``seq_len``, ``seed``, ``prepend_bos``) in one batched pass per ``batch_size``
    sequences; weight detectors read the weights.
    """
    check_detectors(detectors)
    if tokens is None:
        tokens = repeated_tokens(model, n_seqs, seq_len, seed, prepend_bos=prepend_bos)
    bos = bool(prepend_bos) if prepend_bos is not None else tokens.shape[1] % 2 == 1
    masks = {n: DETECTORS[n].fn for n in detectors if DETECTORS[n].kind == "pattern"}
    scores = pattern_scores(model, tokens, masks, batch_size=batch_size) if masks else {}
    for name in detectors:
        if DETECTORS[name].kind == "weights":
            scores[name] = DETECTORS[name].fn(model)
    ordered = {name: scores[name] for name in detectors}
    return HeadScores(ordered, tokens.shape[0], (tokens.shape[1] - bos) // 2, seed, bos)
