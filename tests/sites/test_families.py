"""Family selection: supported types map to a family; anything else is refused with the list."""

from __future__ import annotations

import pytest
from transformers import BertConfig, LlamaConfig

from mechscope import HookedModel, MechscopeError
from mechscope.families import family_for, supported_model_types
from mechscope.models.tiny import tiny_model


def test_supported_types_cover_the_four_families() -> None:
    names = {family_for(type("C", (), {"model_type": t})()).name for t in supported_model_types()}
    assert names == {"gpt2", "llama", "gpt_neox", "mixtral"}
    assert family_for(LlamaConfig()).name == "llama"


def test_unsupported_architecture_lists_the_supported_ones() -> None:
    with pytest.raises(MechscopeError) as err:
        family_for(BertConfig())
    msg = str(err.value)
    assert "unsupported architecture model_type='bert'" in msg and "gpt2, gpt_neox, llama" in msg
    assert "\n" not in msg


def test_a_variant_missing_a_module_is_refused_at_load() -> None:
    hf = tiny_model("llama")
    del hf.model.layers[0].mlp.gate_proj
    with pytest.raises(MechscopeError, match="has no module 'model.layers.0.mlp.gate_proj'"):
        HookedModel(hf)
