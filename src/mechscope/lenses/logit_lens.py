"""The logit lens: read every layer's residual stream as if it were the last one.

Steps:

1. one forward caches ``blocks.*.hook_{site}`` (``resid_post`` by default) for one prompt;
2. the cached residuals are stacked into ``[layer pos d_model]`` and, a chunk of layers at a
   time, passed through the model's own final norm and unembedding (``run_from`` at
   ``layer == n_layers`` calls the HF modules themselves, so nothing is re-implemented);
3. softmax over the vocabulary gives, per layer and position, the top-k next tokens and, for an
   optional target token, its rank (0 = most likely) and probability;
4. ``KL(final || lens)`` in nats per layer and position compares each reading with the model's
   own output distribution.

At the last layer of ``resid_post`` this is exactly the model's output (KL 0), which the tests
check. :func:`read_lens` is shared with the tuned lens, which translates each residual first.

nostalgebraist, "interpreting GPT: the logit lens", LessWrong (2020).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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

# (resid [n pos d_model], layers [n]) -> translated resid; the tuned lens's translators
Translate = Callable[[Tensor, Tensor], Tensor]

__all__ = ["SITES", "LogitLensResult", "Translate", "lens_logits", "logit_lens", "read_lens"]


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
    kl: np.ndarray | None = None  # [layer pos] KL(final || lens) in nats
    lens: str = "logit"  # which lens read the residuals: logit or tuned

    def mean_kl(self) -> np.ndarray:
        """[layer] KL(final || lens) averaged over the positions read."""
        if self.kl is None:
            raise MechscopeError("this lens result has no KL")
        return self.kl.mean(axis=1)

    def to_dict(self, decode: Callable[[int], str] | None = None) -> dict[str, Any]:
        """A JSON-ready dict of plain lists: every field by name, and ``mean_kl`` [layer].

        With ``decode`` (token id -> text, e.g. the tokenizer's), also ``target_token`` and
        ``rows``, one entry per layer: ``layer``, ``top`` (per position, the top-k
        ``{"id", "token", "prob"}``), ``target_rank`` and ``target_prob`` (per position, when a
        target is tracked), ``kl`` (per position) and ``mean_kl``.
        """
        out: dict[str, Any] = {"lens": self.lens, "site": self.site, "target": self.target}
        for name in (
            "layers",
            "tokens",
            "positions",
            "top_ids",
            "top_probs",
            "target_rank",
            "target_prob",
            "kl",
        ):
            value = getattr(self, name)
            out[name] = None if value is None else value.tolist()
        out["mean_kl"] = None if self.kl is None else self.mean_kl().tolist()
        if decode is not None:
            out["target_token"] = None if self.target is None else decode(self.target)
            out["rows"] = [self._row(i, decode) for i in range(len(self.layers))]
        return out

    def _row(self, i: int, decode: Callable[[int], str]) -> dict[str, Any]:
        top = [
            [{"id": int(t), "token": decode(int(t)), "prob": float(p)} for t, p in zip(ids, ps)]
            for ids, ps in zip(self.top_ids[i], self.top_probs[i], strict=True)
        ]
        row: dict[str, Any] = {"layer": int(self.layers[i]), "top": top}
        if self.target_rank is not None and self.target_prob is not None:
            row["target_rank"] = self.target_rank[i].tolist()
            row["target_prob"] = self.target_prob[i].tolist()
        if self.kl is not None:
            row["kl"] = self.kl[i].tolist()
            row["mean_kl"] = float(self.kl[i].mean())
        return row


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


def check_site(model: HookedModel, site: str) -> str:
    """``site`` if the model has it at every layer, else a :class:`MechscopeError`."""
    if site not in SITES:
        raise MechscopeError(f"site must be one of {', '.join(SITES)}, not {site!r}")
    pattern = f"blocks.*.hook_{site}"
    if f"blocks.0.hook_{site}" not in model.sites:
        raise MechscopeError(f"{model.family.name} models have no {site} site; use resid_post")
    return pattern


def _residuals(model: HookedModel, tokens: Tensor, site: str) -> tuple[Tensor, Tensor]:
    """The cached residual stream of every layer [layer pos d_model] and the logits [pos d_vocab]."""
    pattern = check_site(model, site)
    logits, cache = model.run_with_cache(tokens, names=pattern)
    return stack(cache, pattern)[:, 0], logits[0].float()


def _unembed(model: HookedModel, resid: Tensor) -> Tensor:
    """Final norm and unembedding of ``resid`` [n pos d_model] -> float logits [n pos d_vocab]."""
    # At layer == n_layers run_from calls no decoder layer, so it needs no recorded inputs.
    with model.capture_inputs() as inputs:
        return model.run_from(resid, model.dims.n_layers, inputs).float()


def lens_logits(model: HookedModel, tokens: Tensor | str, *, site: str = "resid_post") -> Tensor:
    """Logit-lens logits of one prompt, [layer pos d_vocab] (all of them: mind the memory)."""
    tokens = _as_tokens(model, tokens)
    with torch.inference_mode():
        return _unembed(model, _residuals(model, tokens, site)[0])


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
    The result's ``kl`` is KL(final || lens) per layer and position.
    """
    return read_lens(model, tokens, target=target, top_k=top_k, site=site, positions=positions)


def read_lens(
    model: HookedModel,
    tokens: Tensor | str,
    *,
    target: int | None = None,
    top_k: int = 5,
    site: str = "resid_post",
    positions: Sequence[int] | None = None,
    translate: Translate | None = None,
    lens: str = "logit",
) -> LogitLensResult:
    """:func:`logit_lens`, with each layer's residual passed through ``translate`` first."""
    d_vocab = model.dims.d_vocab
    if not 1 <= top_k <= d_vocab:
        raise MechscopeError(f"top_k must lie in [1, {d_vocab}], got {top_k}")
    if target is not None and not 0 <= target < d_vocab:
        raise MechscopeError(f"target token id must lie in [0, {d_vocab}), got {target}")
    tokens = _as_tokens(model, tokens)
    top_ids, top_probs, ranks, probs, kls = [], [], [], [], []
    with torch.inference_mode():
        read = _positions(positions, tokens.shape[1])
        resid, final = _residuals(model, tokens, site)
        resid, final = resid[:, read], final[read].log_softmax(-1)  # final: [pos d_vocab]
        n_layers, n_pos = resid.shape[:2]
        chunk = max(1, _CHUNK_ELEMENTS // (n_pos * d_vocab))
        for start in range(0, n_layers, chunk):
            part = resid[start : start + chunk]
            if translate is not None:
                part = translate(part, torch.arange(start, start + part.shape[0]))
            logits = _unembed(model, part)  # [chunk pos d_vocab]
            logp = logits.log_softmax(-1)
            p = logp.exp()
            top = p.topk(top_k, dim=-1)
            top_ids.append(top.indices)
            top_probs.append(top.values)
            kls.append((final.exp() * (final - logp)).sum(-1).clamp_min(0))
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
        kl=torch.cat(kls).cpu().numpy(),
        lens=lens,
    )
