"""Transcoder sets round-trip through both layouts; bad folders are one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from graphkit import random_set

from mechscope.errors import MechscopeError
from mechscope.graphs.tcfiles import load_transcoders, save_transcoders
from mechscope.models.fingerprint import model_fingerprint
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model


@pytest.fixture(scope="module")
def model() -> HookedModel:
    return HookedModel(tiny_model("llama"))


@pytest.mark.parametrize("layout", ["saelens", "circuit_tracer"])
@pytest.mark.parametrize("kind", [("jumprelu", True), ("jumprelu", False), ("topk", False)])
def test_round_trip(model, tmp_path, layout, kind) -> None:
    activation, cross = kind
    tcs = random_set(model, cross_layer=cross, activation=activation).to(torch.float32)
    save_transcoders(tcs, tmp_path / "t", layout)
    back = load_transcoders(tmp_path / "t", model)
    assert back.activation == activation and back.cross_layer == cross
    x = torch.randn(5, model.dims.d_model)
    for layer in range(tcs.n_layers):
        assert torch.allclose(back.encode(layer, x), tcs.encode(layer, x), atol=1e-6)
    acts = [tcs.encode(i, x) for i in range(tcs.n_layers)]
    for a, b in zip(back.decode(acts), tcs.decode(acts)):
        assert torch.allclose(a, b, atol=1e-6)


def test_bad_folders(model, tmp_path) -> None:
    tcs = random_set(model).to(torch.float32)
    save_transcoders(tcs, tmp_path / "t", "circuit_tracer")
    (tmp_path / "t" / "layer_1.safetensors").unlink()
    (tmp_path / "t" / "config.yaml").unlink()
    with pytest.raises(MechscopeError, match=r"lacks the transcoders of layers \[1\]"):
        load_transcoders(tmp_path / "t", model)
    other = HookedModel(tiny_model("gpt2"))  # 3 layers and d_model 48 too: another model
    theirs = random_set(other, d_sae=8).to(torch.float32)
    theirs.model_name, theirs.fingerprint = "tiny-gpt2", model_fingerprint(other)
    save_transcoders(theirs, tmp_path / "g")
    with pytest.raises(MechscopeError, match="trained on another model"):
        load_transcoders(tmp_path / "g", model)
    assert load_transcoders(tmp_path / "g", other).model_name == "tiny-gpt2"
    cfg = tmp_path / "g" / "layer_0" / "cfg.json"
    assert json.loads(cfg.read_text())["metadata"]["hook_name"] == "blocks.0.mlp.hook_in"
    (tmp_path / "g" / "mechscope.json").unlink()
    two = HookedModel(tiny_model("falcon"))  # 2 layers
    with pytest.raises(MechscopeError, match="cover 3 layers but the model has 2"):
        load_transcoders(tmp_path / "g", two)
    with pytest.raises(MechscopeError, match="no transcoder folder"):
        load_transcoders(tmp_path / "nowhere", model)
