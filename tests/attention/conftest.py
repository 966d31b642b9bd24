"""Tiny models with a word-level tokenizer and random causal patterns for the attention views."""

from __future__ import annotations

import numpy as np
import pytest

from mechscope import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer
from mechscope.report import DEFAULT_PROMPTS

WORDS = sorted({w for p in DEFAULT_PROMPTS for w in p.replace(",", " , ").split()})


def tiny(kind: str = "llama") -> HookedModel:
    return HookedModel(tiny_model(kind), tiny_tokenizer(WORDS), provenance={"name": f"tiny-{kind}"})


@pytest.fixture(scope="module")
def tiny_llama() -> HookedModel:
    return tiny("llama")


@pytest.fixture(scope="session")
def make_patterns():
    """``make_patterns(n_layers, n_heads, n_pos, seed=0)``: random causal softmax patterns."""
    return causal_patterns


@pytest.fixture(scope="session")
def make_tiny():
    """``make_tiny(kind)``: a tiny random model of a family, with the word tokenizer."""
    return tiny


def causal_patterns(n_layers: int, n_heads: int, n_pos: int, seed: int = 0) -> np.ndarray:
    """Random softmax patterns [layer head query_pos key_pos] with a causal mask."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n_layers, n_heads, n_pos, n_pos)) * 2
    scores[..., np.triu_indices(n_pos, 1)[0], np.triu_indices(n_pos, 1)[1]] = -np.inf
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
