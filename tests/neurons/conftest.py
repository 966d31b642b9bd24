"""Fixtures of the neuron tests (tiny models and a small in-memory corpus)."""

from __future__ import annotations

import pytest
from neuron_helpers import hooked, make_corpus

from mechscope.corpus import Corpus
from mechscope.models.hooked import HookedModel


@pytest.fixture
def llama() -> HookedModel:
    return hooked("llama")


@pytest.fixture
def gpt2() -> HookedModel:
    return hooked("gpt2")


@pytest.fixture
def corpus() -> Corpus:
    return make_corpus()
