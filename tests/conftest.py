"""Fixtures shared by several test files.

The SmolLM2 fixtures are session-scoped and built on first use, so tests that never ask for them
never pay the load (about 2 s each once the GGUF conversion is cached, about 20 s the first time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from mechscope import HookedModel

IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="session")
def ioi_prompt() -> str:
    """The indirect-object-identification prompt (14 SmolLM2 tokens, no BOS)."""
    return IOI_PROMPT


@pytest.fixture(scope="session")
def smollm2() -> HookedModel:
    """The built-in SmolLM2-135M-Instruct as a ``HookedModel`` (attn="sdpa")."""
    import mechscope

    return mechscope.load("smollm2-135m", progress=False)


@pytest.fixture(scope="session")
def smollm2_hf_copy() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(hf_model, tokenizer)``: a second, bare SmolLM2 with its default (sdpa) attention.

    It is the reference for "hooked == bare HF" and the source of oracle copies. Treat it as
    read-only: ``HookedModel`` and TransformerLens's bridge both switch the attention
    implementation of the model they wrap, so hand them ``copy.deepcopy(hf_model)``.
    """
    from mechscope.models.loading import load_hf

    hf, tokenizer, _ = load_hf("smollm2-135m", progress=False)
    return hf, tokenizer
