"""A tiny Llama with a word-level tokenizer, and random word sequences to probe."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer

WORDS = [f"word{i}" for i in range(40)]


@pytest.fixture(scope="session")
def tiny() -> HookedModel:
    """A random tiny Llama (3 layers, d_model 48) whose tokenizer knows :data:`WORDS`."""
    return HookedModel(tiny_model("llama"), tiny_tokenizer(WORDS))


def make_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct texts of 3 to 8 random words."""
    rng = random.Random(seed)
    texts: dict[str, None] = {}
    while len(texts) < n:
        texts[" ".join(rng.choices(WORDS, k=rng.randint(3, 8)))] = None
    return list(texts)


@pytest.fixture(scope="session")
def random_texts() -> Callable[..., list[str]]:
    """``random_texts(n, seed=0)``: ``n`` distinct texts of 3 to 8 random words."""
    return make_texts
