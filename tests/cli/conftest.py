"""Tiny model folders (weights, config and a word-level tokenizer) that ``mechscope.load`` reads."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from transformers import BertConfig, BertLMHeadModel

from mechscope.models.tiny import VOCAB, tiny_model, tiny_tokenizer
from mechscope.report import DEFAULT_PROMPTS

WORDS = sorted({w for p in DEFAULT_PROMPTS for w in p.replace(",", " , ").split()})


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny Llama with a tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer(WORDS).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSONL corpus of 60 documents (20-200 words each) that the tiny tokenizer knows."""
    words = sorted({w for p in DEFAULT_PROMPTS for w in p.split()})  # the tokenizer's words
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("cli-corpus") / "text.jsonl"
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 200))) for _ in range(60)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


@pytest.fixture(scope="session")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny BERT: transformers loads it as a causal LM, mechscope has no family for it."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        is_decoder=True,
    )
    BertLMHeadModel(config).save_pretrained(folder)
    tiny_tokenizer(WORDS).save_pretrained(folder)
    return folder


CLEAN = "When Mary and John went to the store , John gave a drink to"
CORRUPT = "When John and Mary went to the store , Mary gave a drink to"


@pytest.fixture(scope="session")
def task_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("task") / "ioi.jsonl"
    rows = [
        {"clean": CLEAN, "corrupt": CORRUPT, "answer": " Mary", "wrong": " John"},
        {"clean": CORRUPT, "corrupt": CLEAN, "answer": " John", "wrong": " Mary"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path
