"""The logit lens: read every layer's residual stream as if it were the last one.

Steps:

1. one forward caches ``blocks.*.hook_{site}`` (``resid_post`` by default) for one prompt;
2. the cached residuals are stacked into ``[layer pos d_model]`` and, a chunk of layers at a
   time, passed through the model's own final norm and unembedding (``run_from`` at
   ``layer == n_layers`` calls the HF modules themselves, so nothing is re-implemented);
3. softmax over the vocabulary gives, per layer and position, the top-k next tokens and, for an
   optional target token, its rank (0 = most likely) and probability.

At the last layer of ``resid_post`` this is exactly the model's output, which the tests check.

nostalgebraist, "interpreting GPT: the logit lens", LessWrong (2020).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mechscope.cache import stack
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel

Tensor = torch.Tensor
SITES = ("resid_pre", "resid_mid", "resid_post")
# Logits held at once, in floats: bounds memory on long prompts and large vocabularies.
_CHUNK_ELEMENTS = 1 << 25

__all__ = ["SITES", "LogitLensResult", "lens_logits", "logit_lens"]


@dataclass(frozen=True, eq=False)
class LogitLensResult:
    """Top-k readings of the residual stream at every layer and position of one prompt.

    Shapes use the axis glossary of :mod:`mechscope.axes`; ``k`` is ``top_k``.
    """

    site: str  # which residual site was read: resid_pre, resid_mid or resid_post
    layers: np.ndarray  # [layer] block index of each row
    tokens: np.ndarray  # the prompt's token ids, all of them
    positions: np.ndarray  # [pos] the positions read (indices into tokens)
    top_ids: np.ndarray  # [layer pos k] most likely next tokens, best first
    top_probs: np.ndarray  # [layer pos k] their probabilities
    target: int | None = None  # token id whose rank and probability are tracked
    target_rank: np.ndarray | None = None  # [layer pos] 0 = the target is the top-1 token
    target_prob: np.ndarray | None = None  # [layer pos]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of plain lists."""
        out: dict[str, Any] = {"site": self.site, "target": self.target}
        for name in (
            "layers",
            "tokens",
            "positions",
            "top_ids",
            "top_probs",
            "target_rank",
            "target_prob",
        ):
            value = getattr(self, name)
            out[name] = None if value is None else value.tolist()
        return out


def _as_tokens(model: HookedModel, tokens: Tensor | str) -> Tensor:
    if isinstance(tokens, str):
        tokens = model.to_tokens(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2 or tokens.shape[0] != 1:
        raise MechscopeError(
            f"the logit lens reads one prompt: tokens must be [pos] or [1 pos], "
            f"got {tuple(tokens.shape)}"
        )
    return tokens


def _positions(positions: Sequence[int] | None, n_pos: int) -> list[int]:
    if positions is None:
        return list(range(n_pos))
    bad = [p for p in positions if not -n_pos <= p < n_pos]
    if bad or not positions:
        raise MechscopeError(
            f"positions must be a non-empty list within [-{n_pos}, {n_pos}), got {list(positions)}"
        )
    return [p % n_pos for p in positions]


def _residuals(model: HookedModel, tokens: Tensor, site: str) -> Tensor:
    """The cached residual stream of every layer, [layer pos d_model]."""
    if site not in SITES:
        raise MechscopeError(f"site must be one of {', '.join(SITES)}, not {site!r}")
    pattern = f"blocks.*.hook_{site}"
    if f"blocks.0.hook_{site}" not in model.sites:
        raise MechscopeError(f"{model.family.name} models have no {site} site; use resid_post")
    _, cache = model.run_with_cache(tokens, names=pattern)
    return stack(cache, pattern)[:, 0]


def _unembed(model: HookedModel, resid: Tensor) -> Tensor:
    """Final norm and unembedding of ``resid`` [n pos d_model] -> float logits [n pos d_vocab]."""
    # At layer == n_layers run_from calls no decoder layer, so it needs no recorded inputs.
    with model.capture_inputs() as inputs:
        return model.run_from(resid, model.dims.n_layers, inputs).float()


def lens_logits(model: HookedModel, tokens: Tensor | str, *, site: str = "resid_post") -> Tensor:
    """Logit-lens logits of one prompt, [layer pos d_vocab] (all of them: mind the memory)."""
    tokens = _as_tokens(model, tokens)
    with torch.inference_mode():
        return _unembed(model, _residuals(model, tokens, site))


def logit_lens(
    model: HookedModel,
    tokens: Tensor | str,
    *,
    target: int | None = None,
    top_k: int = 5,
    site: str = "resid_post",
    positions: Sequence[int] | None = None,
) -> LogitLensResult:
    """Top-k tokens (and the target's rank and probability) read from every layer of one prompt.

    ``tokens`` is ``[pos]``, ``[1 pos]`` or a string. ``site`` is ``resid_post`` (row L is the
    output of block L), ``resid_pre`` (row 0 is the embedding) or ``resid_mid``. ``positions``
    (negative counts from the end) limits the reading to some positions; None reads them all.
    """
    d_vocab = model.dims.d_vocab
    if not 1 <= top_k <= d_vocab:
        raise MechscopeError(f"top_k must lie in [1, {d_vocab}], got {top_k}")
    if target is not None and not 0 <= target < d_vocab:
        raise MechscopeError(f"target token id must lie in [0, {d_vocab}), got {target}")
    tokens = _as_tokens(model, tokens)
    top_ids, top_probs, ranks, probs = [], [], [], []
    with torch.inference_mode():
        read = _positions(positions, tokens.shape[1])
        resid = _residuals(model, tokens, site)[:, read]  # [layer pos d_model]
        n_layers, n_pos = resid.shape[:2]
        chunk = max(1, _CHUNK_ELEMENTS // (n_pos * d_vocab))
        for start in range(0, n_layers, chunk):
            logits = _unembed(model, resid[start : start + chunk])  # [chunk pos d_vocab]
            p = logits.softmax(-1)
            top = p.topk(top_k, dim=-1)
            top_ids.append(top.indices)
            top_probs.append(top.values)
            if target is not None:
                ranks.append((logits > logits[..., target, None]).sum(-1))
                probs.append(p[..., target])
    return LogitLensResult(
        site=site,
        layers=np.arange(n_layers),
        tokens=tokens[0].cpu().numpy(),
        positions=np.asarray(read),
        top_ids=torch.cat(top_ids).cpu().numpy(),
        top_probs=torch.cat(top_probs).cpu().numpy(),
        target=target,
        target_rank=torch.cat(ranks).cpu().numpy() if ranks else None,
        target_prob=torch.cat(probs).cpu().numpy() if probs else None,
    )
