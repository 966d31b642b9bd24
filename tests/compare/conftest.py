"""Tiny models, tokenizers and a corpus shared by the compare and diff tests."""

from __future__ import annotations

import random

import pytest
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, GPT2Config, PreTrainedTokenizerFast

from mechscope.corpus import Corpus
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import VOCAB, tiny_model, tiny_tokenizer

WORDS = [f"{c}{v}{d}" for c in "bcdfg" for v in "aeiou" for d in "kmt"][:60]


def pair_tokenizer() -> PreTrainedTokenizerFast:
    """A tokenizer that cuts every word into pieces of two characters (``bak`` -> ``ba``, ``k``)."""
    pieces = sorted({w[i : i + 2] for w in WORDS for i in range(0, len(w), 2)})
    vocab = ["[UNK]", "[PAD]", *pieces]
    vocab += [f"p{i}" for i in range(VOCAB - len(vocab))]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Split(Regex(".{1,2}"), "isolated")]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")


@pytest.fixture(scope="session")
def texts() -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) for _ in range(40)]


@pytest.fixture(scope="session")
def word_corpus(texts: list[str]) -> Corpus:
    return Corpus.from_texts(texts, name="words")


@pytest.fixture(scope="session")
def llama() -> HookedModel:
    return HookedModel(tiny_model("llama"), tiny_tokenizer(WORDS))


@pytest.fixture(scope="session")
def gpt2_pairs() -> HookedModel:
    """A 2-layer GPT-2 of width 32 (the Llama's is 48) reading two-character pieces."""
    torch.manual_seed(1)
    config = GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        vocab_size=VOCAB,
        bos_token_id=0,
        eos_token_id=0,
    )
    return HookedModel(AutoModelForCausalLM.from_config(config).eval(), pair_tokenizer())


@pytest.fixture(scope="session")
def neox() -> HookedModel:
    """A tiny GPT-NeoX on the same tokenizer as ``llama``."""
    return HookedModel(tiny_model("gpt_neox", seed=2), tiny_tokenizer(WORDS))
