"""Fixtures for the task tests: SmolLM2's tokenizer (cheap) and a stand-in tokenizer."""

from __future__ import annotations

import re
from typing import Any

import pytest


@pytest.fixture(scope="session")
def smol_tokenizer() -> Any:
    """SmolLM2-135M-Instruct's tokenizer (no BOS; digits split one by one)."""
    from mechscope.models.loading import load_hf

    return load_hf("smollm2-135m", progress=False)[1]


class PairDigitTokenizer:
    """A word-level stand-in that splits numbers into two-digit tokens (as GPT-2 does years).

    Ids are given out on first sight, so any text is encodable.
    """

    _PIECE = re.compile(r" ?[A-Za-z]+| ?\d\d|\d| ?[^\sA-Za-z\d]")

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.pad_token_id = None
        self.eos_token_id = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = [self.vocab.setdefault(p, len(self.vocab)) for p in self._PIECE.findall(text)]
        return {"input_ids": ids}

    def decode(self, ids: list[int]) -> str:
        inverse = {i: p for p, i in self.vocab.items()}
        return "".join(inverse[i] for i in ids)

    def __len__(self) -> int:
        return len(self.vocab)


@pytest.fixture
def pair_digit_tokenizer() -> PairDigitTokenizer:
    return PairDigitTokenizer()
