"""A tiny Llama with a word-level tokenizer and a random-word corpus, in memory and on disk."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mechscope.corpus import Corpus
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer

WORDS = [f"v{i}" for i in range(90)]


def random_texts(n_docs: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 300))) for _ in range(n_docs)]


@pytest.fixture(scope="session")
def tiny() -> HookedModel:
    """Tiny Llama (3 layers, d_model 48, 64 positions) with a tokenizer over ``WORDS``."""
    return HookedModel(tiny_model("llama"), tiny_tokenizer(WORDS))


@pytest.fixture(scope="session")
def toy_corpus() -> Corpus:
    """About 30k tokens of random words in 200 documents."""
    return Corpus.from_texts(random_texts(200), name="toy")


@pytest.fixture(scope="session")
def toy_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(saved tiny Llama folder, JSONL corpus of about 120k tokens) for subprocess harvests."""
    root = tmp_path_factory.mktemp("toy-harvest")
    model = root / "model"
    tiny_model("llama").save_pretrained(model)
    tiny_tokenizer(WORDS).save_pretrained(model)
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in random_texts(800, seed=1)))
    return model, corpus
