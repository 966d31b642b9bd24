"""A tiny Llama with a word tokenizer and a small corpus of its words, for tuned-lens tests."""

from __future__ import annotations

import random

import pytest

from mechscope import HookedModel
from mechscope.corpus import Corpus
from mechscope.models.tiny import tiny_model, tiny_tokenizer

WORDS = [f"t{i}" for i in range(90)]


@pytest.fixture(scope="session")
def tiny_lm() -> HookedModel:
    return HookedModel(tiny_model("llama"), tiny_tokenizer(WORDS))


@pytest.fixture(scope="session")
def tiny_corpus() -> Corpus:
    """200 documents of 160 words (about 10 held out as the test split)."""
    rng = random.Random(0)
    docs = [" ".join(rng.choice(WORDS) for _ in range(160)) for _ in range(200)]
    return Corpus.from_texts(docs, name="tiny-words")
