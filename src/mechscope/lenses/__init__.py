"""Lenses: read intermediate residual streams as next-token predictions.

Every lens is one file with the signature ``lens(model, tokens, *, target=None, top_k=5, ...)
-> LogitLensResult`` and is listed in :data:`LENSES`: ``logit`` (the model's own final norm and
unembedding) and ``tuned`` (a learned affine translator per layer first; pass ``lens=``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mechscope.lenses.cached import REPORT_TOKENS, cached_tuned_lens, tuned_lens_path
from mechscope.lenses.evaluate import LensKL, held_out_kl
from mechscope.lenses.logit_lens import SITES, LogitLensResult, lens_logits, logit_lens, read_lens
from mechscope.lenses.tuned_lens import TunedLens, model_fingerprint, tuned_lens
from mechscope.lenses.tuned_train import TrainConfig, train_tuned_lens

LENSES: dict[str, Callable[..., Any]] = {"logit": logit_lens, "tuned": tuned_lens}

__all__ = [
    "LENSES",
    "REPORT_TOKENS",
    "SITES",
    "LensKL",
    "LogitLensResult",
    "TrainConfig",
    "TunedLens",
    "cached_tuned_lens",
    "held_out_kl",
    "lens_logits",
    "logit_lens",
    "model_fingerprint",
    "read_lens",
    "train_tuned_lens",
    "tuned_lens",
    "tuned_lens_path",
]
