"""Lenses: read intermediate residual streams as next-token predictions.

Every lens is one file with the signature ``lens(model, tokens, *, target=None, top_k=5, site=...)
-> result dataclass`` and is listed in :data:`LENSES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mechscope.lenses.logit_lens import SITES, LogitLensResult, lens_logits, logit_lens

LENSES: dict[str, Callable[..., Any]] = {"logit": logit_lens}

__all__ = ["LENSES", "SITES", "LogitLensResult", "lens_logits", "logit_lens"]
