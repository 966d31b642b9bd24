"""Family selection: supported types map to a family; anything else is refused with the list."""

from __future__ import annotations

import pytest
from transformers import BertConfig, LlamaConfig

from mechscope import HookedModel, MechscopeError
from mechscope.families import family_for, supported_model_types
from mechscope.models.tiny import CONFIGS, tiny_model


def test_every_tiny_kind_maps_to_its_family() -> None:
    assert set(supported_model_types()) >= {
        "gpt2", "llama", "mistral", "qwen2", "qwen3", "gpt_neox", "mixtral", "gemma", "gemma2",
        "gemma3_text", "phi3", "olmo2", "gptj", "opt", "falcon", "starcoder2", "granite", "gpt_oss",
    }  # fmt: skip
    for kind, make in CONFIGS.items():
        config = make()
        assert config.model_type in supported_model_types(), kind
        assert config.model_type in family_for(config).model_types, kind
    assert family_for(LlamaConfig()).name == "llama"


def test_unsupported_architecture_lists_the_supported_ones() -> None:
    with pytest.raises(MechscopeError) as err:
        family_for(BertConfig())
    msg = str(err.value)
    assert (
        "unsupported architecture model_type='bert'" in msg and "gemma3_text, gpt2, gpt_neox" in msg
    )
    assert "\n" not in msg


def test_a_variant_missing_a_module_is_refused_at_load() -> None:
    hf = tiny_model("llama")
    del hf.model.layers[0].mlp.gate_proj
    with pytest.raises(MechscopeError, match="has no module 'model.layers.0.mlp.gate_proj'"):
        HookedModel(hf)
