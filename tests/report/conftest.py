"""A tiny Llama with a word-level tokenizer, built in memory (no files)."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast

from mechscope import HookedModel
from mechscope.models.tiny import VOCAB, tiny_model, tiny_tokenizer
from mechscope.report import DEFAULT_PROMPTS

WORDS = sorted({w for p in DEFAULT_PROMPTS for w in p.replace(",", " , ").split()})


def word_tokenizer(n_vocab: int = VOCAB) -> PreTrainedTokenizerFast:
    """The default prompts' words, then fillers."""
    return tiny_tokenizer(WORDS, n_vocab)


@pytest.fixture(scope="module")
def tiny() -> HookedModel:
    return HookedModel(tiny_model("llama"), word_tokenizer(), provenance={"name": "tiny-llama"})


@pytest.fixture(scope="module")
def small_corpus():
    """A few thousand words of the prompts' vocabulary: enough for every corpus-driven section."""
    import random

    from mechscope.corpus import Corpus

    rng = random.Random(0)
    return Corpus.from_texts([" ".join(rng.choices(WORDS, k=400)) for _ in range(40)])
