"""Held-out evaluation of lenses: KL(final || lens) per layer on corpus windows.

For each batch of windows (test split by default) one forward caches every layer's residual; each
layer is read through the final norm and unembedding (after the tuned lens's translator, if
given) in float32, and KL(final || lens) in nats is averaged over all positions. The logit lens
and the tuned lens are read from the same forward, so their curves compare like with like.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mechscope.cache import stack
from mechscope.corpus import Corpus, batches, load_corpus
from mechscope.errors import MechscopeError
from mechscope.lenses.logit_lens import check_site
from mechscope.lenses.tuned_lens import TunedLens
from mechscope.models.hooked import HookedModel
from mechscope.progress import progress as progress_bar

__all__ = ["LensKL", "held_out_kl"]


@dataclass(frozen=True, eq=False)
class LensKL:
    """Mean KL(final || lens) per layer over ``tokens`` held-out positions."""

    site: str
    tokens: int  # positions averaged over
    logit: np.ndarray  # [layer] the logit lens
    tuned: np.ndarray | None = None  # [layer] the tuned lens, when one was given

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"site": self.site, "tokens": self.tokens}
        out["logit"] = self.logit.tolist()
        out["tuned"] = None if self.tuned is None else self.tuned.tolist()
        return out


def _kl(model: HookedModel, resid: torch.Tensor, p: torch.Tensor, neg_h: torch.Tensor) -> float:
    """Summed KL(final || lens) of ``resid [n d_model]`` given the final probabilities ``p``
    [n d_vocab] and ``neg_h = sum(p log p)`` [n]: with the lens's logits z,
    KL = sum p (log p - z) + logsumexp(z), since the probabilities sum to 1."""
    with model.capture_inputs() as inputs:
        z = model.run_from(resid[None], model.dims.n_layers, inputs)[0].float()
    kl = neg_h - (p * z).sum(-1) + torch.logsumexp(z, -1)
    return float(kl.clamp_min(0).sum())


def held_out_kl(
    model: HookedModel,
    corpus: Corpus | str | None = None,
    *,
    lens: TunedLens | None = None,
    site: str = "resid_post",
    tokens: int = 4096,
    seq_len: int = 128,
    batch_size: int = 4,
    split: str = "test",
    chunk: int = 256,
    quiet: bool = True,
) -> LensKL:
    """Per-layer KL of the logit lens (and of ``lens``) on ``tokens`` positions of ``split``."""
    if lens is not None:
        site = lens.site
    pattern = check_site(model, site)
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus)
    n_layers = model.dims.n_layers
    sums = {"logit": torch.zeros(n_layers, dtype=torch.float64)}
    if lens is not None:
        sums["tuned"] = torch.zeros(n_layers, dtype=torch.float64)
    data = batches(corpus, model.tokenizer, batch_size=batch_size, seq_len=seq_len,
                   n_tokens=tokens, seed=0, split=split)  # fmt: skip
    seen = 0
    with torch.inference_mode():
        for batch in progress_bar(data, desc="lens KL", quiet=quiet, unit="batch"):
            logits, cache = model.run_with_cache(batch, names=pattern)
            resid = stack(cache, pattern).flatten(1, 2)  # [layer n d_model]
            final = logits.flatten(0, 1).float().log_softmax(-1)  # [n d_vocab]
            seen += final.shape[0]
            for a in range(0, final.shape[0], chunk):
                part, fin = resid[:, a : a + chunk], final[a : a + chunk]
                p = fin.exp()
                neg_h = (p * fin).sum(-1)
                for layer in range(n_layers):
                    sums["logit"][layer] += _kl(model, part[layer], p, neg_h)
                    if lens is not None:
                        h = lens.translate(part[layer, None], [layer])[0]
                        sums["tuned"][layer] += _kl(model, h, p, neg_h)
    if seen == 0:
        raise MechscopeError("no held-out window to evaluate; use a larger corpus")
    means = {k: (v / seen).numpy() for k, v in sums.items()}
    return LensKL(site=site, tokens=seen, logit=means["logit"], tuned=means.get("tuned"))
