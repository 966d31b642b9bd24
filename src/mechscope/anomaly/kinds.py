"""The detector kinds, one entry each in :data:`KINDS`: what they read and how they score.

Every mechanistic kind scores each token at each layer from one vector: ``mahalanobis`` (the site
activation), ``update`` (what block L writes to the residual stream, ``resid_post - resid_pre``,
then Mahalanobis), ``lof`` (the site activation, PCA-whitened), ``attribution`` (gradient x activation
of the output at the site, then Mahalanobis), ``sae`` (the SAE's latents, diagonal Gaussian;
one layer, the SAE's) and ``lens`` (the KL between the model's prediction and what the layer
predicts through a tuned-lens translator: :mod:`mechscope.anomaly.lens`) and ``dla`` (the direct
logit attribution of the model's top logit to the embedding and every attention and MLP output
up to the layer, then Mahalanobis: :mod:`mechscope.anomaly.dla`) and ``contrast`` (the
standardised projection on a direction from generic contrast pairs, as Anthropic's "defection
probes": :mod:`mechscope.anomaly.contrast`). ``attention`` reads the input as a whole: the mean over
its tokens of every head's attention weight on the token itself, Mahalanobis-scored against
trusted windows (:mod:`mechscope.anomaly.attention`; no layers, scores under layer -1). The black-box baselines ``perplexity`` (the token's negative
log-likelihood), ``entropy`` (of the next-token distribution at the token) and ``confidence`` (the
top next-token probability, aggregated as the config says) read only logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.anomaly import contrast, gaussian, lens, lof, mahalanobis
from mechscope.errors import MechscopeError

__all__ = ["BASELINES", "KINDS", "Kind", "check_kinds"]


@dataclass(frozen=True)
class Kind:
    """How one kind of detector fits and scores."""

    reads: str  # "acts", "attributions", "latents", "lens" (acts at L and the last), "dla",
    # "update" (resid_post - resid_pre of block L), "attention" (every head's weight on the
    # token itself; one profile per input, no layers) or "logits"
    new_stats: Callable[[Any], Any] | None = None  # FitConfig -> accumulator with update(x)
    finish: Callable[[Any, Any], dict[str, Tensor]] | None = None  # (stats, config) -> tensors
    score: Callable[[dict[str, Tensor], Tensor, Any], Tensor] | None = None  # -> [n]
    terms: Callable[[dict[str, Tensor], Tensor, Any], Tensor] | None = None  # -> [n d]
    aggregate: str | None = None  # fixed input aggregation (baselines); None: the config's
    prepare: Callable[[Any, Any], dict[int, dict[str, Tensor]]] | None = None  # (model,
    # detector) -> per layer, tensors computed before streaming and passed to finish by name


class _LofStats:
    def __init__(self, config: Any) -> None:
        self.moments = mahalanobis.MahalanobisStats()
        self.sample = lof.Reservoir(config.lof_sample, config.seed)

    def update(self, x: Tensor) -> None:
        self.moments.update(x)
        self.sample.update(x)


def _lof_finish(stats: _LofStats, config: Any) -> dict[str, Tensor]:
    mean, cov = stats.moments.mean_cov()
    assert stats.sample.rows is not None
    return lof.fit_lof(stats.sample.rows, mean, cov, config.lof_dims, config.lof_k)


def _maha(**kw: Any) -> Kind:
    return Kind(
        new_stats=lambda c: mahalanobis.MahalanobisStats(),
        finish=lambda s, c: mahalanobis.fit_tensors(s),
        score=lambda t, x, c: mahalanobis.mahalanobis(t, x),
        terms=lambda t, x, c: mahalanobis.mahalanobis_terms(t, x),
        **kw,
    )


def _contrast_prepare(model: Any, detector: Any) -> dict[int, dict[str, Tensor]]:
    sites = {L: detector.config.site.format(layer=L) for L in detector.kind_layers("contrast")}
    pairs = detector.config.contrast or contrast.DEFAULT_PAIRS
    directions = contrast.contrast_directions(model, pairs, sites)
    return {L: {"direction": d} for L, d in directions.items()}


KINDS: dict[str, Kind] = {
    "mahalanobis": _maha(reads="acts"),
    "attribution": _maha(reads="attributions"),
    "update": _maha(reads="update"),  # what block L writes: resid_post - resid_pre
    "dla": _maha(reads="dla"),
    "lof": Kind(
        reads="acts",
        new_stats=_LofStats,
        finish=_lof_finish,
        score=lambda t, x, c: lof.lof_scores(t, x, c.lof_k),
        terms=lambda t, x, c: lof.project(t, x).abs(),
    ),
    "sae": Kind(
        reads="latents",
        new_stats=lambda c: gaussian.DiagonalStats(),
        finish=lambda s, c: gaussian.fit_diagonal(s),
        score=lambda t, x, c: gaussian.diagonal_terms(t, x).sum(-1),
        terms=lambda t, x, c: gaussian.diagonal_terms(t, x),
    ),
    "lens": Kind(
        reads="lens",
        new_stats=lambda c: mahalanobis.MahalanobisStats(),
        finish=lambda s, c: lens.fit_translator(s),
    ),  # scored with the model's unembedding: see batch.batch_scores
    "contrast": Kind(
        reads="acts",
        new_stats=lambda c: mahalanobis.MahalanobisStats(),
        finish=lambda s, c, direction: contrast.finish(s, direction),
        score=lambda t, x, c: contrast.contrast_score(t, x),
        terms=lambda t, x, c: contrast.contrast_terms(t, x),
        prepare=_contrast_prepare,
    ),  # a direction from contrast pairs (mechscope.anomaly.contrast)
    "attention": Kind(
        reads="attention",
        new_stats=lambda c: mahalanobis.MahalanobisStats(),
        finish=lambda s, c: mahalanobis.fit_tensors(s),
        aggregate="mean",
    ),  # an input's profile of every head's self-attention (mechscope.anomaly.attention)
    "perplexity": Kind(reads="logits", aggregate="mean"),
    "entropy": Kind(reads="logits", aggregate="mean"),
    "confidence": Kind(reads="logits"),  # the config's aggregation: with "last", the reply's
}
BASELINES = ("perplexity", "entropy", "confidence")


def baseline_scores(kind: str, logits: Tensor, tokens: Tensor) -> Tensor:
    """Per token [batch pos]: the token's negative log-likelihood given the tokens before it
    (position 0: 0), the entropy of the next-token distribution at the token, or the probability
    of the model's top next token there (``confidence``: a planted behaviour is a near-certain
    prediction where ordinary text is uncertain)."""
    logp = logits.float().log_softmax(-1)
    if kind == "confidence":
        return logp.max(-1).values.exp()
    if kind == "entropy":
        return -(logp.exp() * logp).sum(-1)
    nll = torch.zeros(tokens.shape, dtype=torch.float32)
    nll[:, 1:] = -logp[:, :-1].gather(-1, tokens[:, 1:, None].to(logp.device))[..., 0].cpu()
    return nll


def check_kinds(kinds: tuple[str, ...], sae: Any) -> None:
    """One-line errors for unknown kinds, an ``sae`` kind without an SAE, or no kind at all."""
    if not kinds:
        raise MechscopeError(f"no detector kind given; use some of {', '.join(KINDS)}")
    for kind in kinds:
        if kind not in KINDS:
            raise MechscopeError(f"unknown detector kind {kind!r}; use some of {', '.join(KINDS)}")
    if "sae" in kinds and sae is None:
        raise MechscopeError("the sae detector needs an SAE: pass --sae FOLDER")
