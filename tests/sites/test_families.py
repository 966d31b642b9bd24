"""Family selection: supported types map to a family; anything else is refused with the list."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from transformers import BertConfig, FalconConfig, Gemma3Config, LlamaConfig, OPTConfig

from mechscope import HookedModel, MechscopeError
from mechscope.cli.main import cli
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


@pytest.mark.parametrize(
    ("kind", "name", "why"),
    [
        ("gptj", "blocks.0.hook_resid_mid", "run attention and MLP in parallel"),
        ("falcon", "blocks.1.hook_resid_mid", "run attention and MLP in parallel"),
        ("gpt_oss", "blocks.0.mlp.hook_post", "mixture-of-experts MLP with no dense neurons"),
        ("gemma2", "blocks.0.mlp.hook_expert_out", "dense MLP, not a mixture of experts"),
        ("opt", "blocks.0.mlp.hook_pre_linear", "ungated MLP"),
        ("llama", "hook_pos_embed", "no learned position embedding"),
    ],
)
def test_a_site_the_family_cannot_have_is_refused_with_the_reason(
    kind: str, name: str, why: str
) -> None:
    model = HookedModel(tiny_model(kind))
    with pytest.raises(MechscopeError, match=why) as err:
        model.run_with_cache(torch.zeros(1, 3, dtype=torch.long), names=name)
    assert name in str(err.value) and "\n" not in str(err.value)
    glob = name.replace("blocks.0.", "blocks.*.").replace("blocks.1.", "blocks.*.")
    if glob != name:
        with pytest.raises(MechscopeError, match=why):
            model.run_with_cache(torch.zeros(1, 3, dtype=torch.long), names=glob)


def test_sequential_variants_keep_resid_mid() -> None:
    for kind in ("falcon_sequential", "gpt_neox_sequential", "gemma2", "olmo2", "opt"):
        assert "blocks.0.hook_resid_mid" in HookedModel(tiny_model(kind)).sites, kind


@pytest.mark.parametrize(
    ("config", "why"),
    [
        (OPTConfig(do_layer_norm_before=False), "post-LayerNorm"),
        (OPTConfig(word_embed_proj_dim=512), "project_in"),
        (FalconConfig(alibi=True), "ALiBi"),
    ],
)
def test_unsupported_variants_are_refused(config: Any, why: str) -> None:
    with pytest.raises(MechscopeError, match=why):
        family_for(config)


def test_info_families_lists_every_type_and_the_fallback() -> None:
    result = CliRunner().invoke(cli, ["info", "--families", "--json"])
    assert result.exit_code == 0, result.output
    overview = json.loads(result.stdout)
    assert set(overview) == {*supported_model_types(), "*"}
    assert "blocks.L.hook_resid_mid" in overview["gptj"]["absent"]
    assert "blocks.L.hook_resid_mid" in overview["gemma2"]["sites"]
    assert "blocks.L.mlp.hook_expert_out" in overview["gpt_oss"]["sites"]
    assert overview["*"]["sites"] == [
        "hook_embed",
        "blocks.L.hook_resid_pre",
        "blocks.L.hook_resid_post",
    ]
    text = CliRunner().invoke(cli, ["info", "--families"])
    assert text.exit_code == 0 and "gemma3_text (gemma3)" in text.stdout
    missing = CliRunner().invoke(cli, ["info"])
    assert missing.exit_code == 2 and "--families" in missing.stderr


def test_a_gemma3_image_text_config_is_refused_with_the_text_only_type() -> None:
    with pytest.raises(MechscopeError, match="gemma3_text"):
        family_for(Gemma3Config())


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        ("gemma2", "post-norms"),
        ("olmo2", "no norm before attention"),
        ("granite", "residual_multiplier"),
        ("opt", "flattened rows"),
        ("bloom", "generic fallback"),
    ],
)
def test_circuit_discovery_refuses_families_its_graph_cannot_model(kind: str, why: str) -> None:
    from mechscope.circuits import Graph
    from mechscope.circuits.nodes import graph_for

    model = HookedModel(tiny_model(kind))
    with pytest.raises(MechscopeError, match=why):
        graph_for(model, None if kind == "bloom" else Graph.from_dims(model.dims))
