"""Helpers of the neuron tests: tiny models with a word-level tokenizer, a small corpus, brute force."""

from __future__ import annotations

import random

import torch

from mechscope.corpus import Corpus
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer

WORDS = [f"t{i}" for i in range(90)]


def make_corpus(n_docs: int = 12, length: int = 70, seed: int = 0) -> Corpus:
    rng = random.Random(seed)
    docs = [" ".join(rng.choice(WORDS) for _ in range(length)) for _ in range(n_docs)]
    return Corpus.from_texts(docs, name="random-words")


def hooked(kind: str, seed: int = 0) -> HookedModel:
    return HookedModel(tiny_model(kind, seed=seed), tiny_tokenizer(WORDS))


def brute_topk(acts: torch.Tensor, k: int, start: int = 1):
    """Per unit: top-k windows by max over positions ``start:`` (ties: earlier window), from
    acts [window pos unit]; positions count from the window's start."""
    best, where = acts[:, start:].max(dim=1)  # [window unit]
    order = torch.sort(best.T, dim=1, descending=True, stable=True).indices[:, :k]
    return best.T.gather(1, order), order, where.T.gather(1, order) + start
