"""HookedModel's module accessors and early stopping (``stop_at_layer``, ``hooks(stop_after=)``).

The expected modules are written out per HF architecture here, not read from the family files.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import CONFIGS, tiny_model


def _llama(hf: nn.Module) -> tuple[nn.Module, str, str, nn.Module, nn.Module]:
    return hf.model.layers, "self_attn", "mlp", hf.model.norm, hf.lm_head


EXPECTED: dict[str, Callable[[nn.Module], tuple[nn.Module, str, str, nn.Module, nn.Module]]] = {
    "gpt2": lambda hf: (hf.transformer.h, "attn", "mlp", hf.transformer.ln_f, hf.lm_head),
    "llama": _llama,
    "mistral": _llama,
    "qwen2": _llama,
    "mixtral": _llama,
    "gpt_neox": lambda hf: (
        hf.gpt_neox.layers,
        "attention",
        "mlp",
        hf.gpt_neox.final_layer_norm,
        hf.embed_out if hasattr(hf, "embed_out") else hf.lm_head,
    ),
}
EXPECTED["gpt_neox_sequential"] = EXPECTED["gpt_neox"]
for _kind in (
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi3",
    "olmo2",
    "granite",
    "starcoder2",
    "gpt_oss",
    "qwen2_moe",
    "olmoe",
):
    EXPECTED[_kind] = _llama
for _kind in ("falcon", "falcon_grouped", "falcon_sequential"):
    EXPECTED[_kind] = lambda hf: (
        hf.transformer.h,
        "self_attention",
        "mlp",
        hf.transformer.ln_f,
        hf.lm_head,
    )
EXPECTED["gptj"] = lambda hf: (hf.transformer.h, "attn", "mlp", hf.transformer.ln_f, hf.lm_head)
# OPT's layer has no MLP module: the accessor gives the down projection, whose output is the write
EXPECTED["opt"] = lambda hf: (
    hf.model.decoder.layers,
    "self_attn",
    "fc2",
    hf.model.decoder.final_layer_norm,
    hf.lm_head,
)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def tiny(request: pytest.FixtureRequest) -> tuple[str, HookedModel]:
    return request.param, HookedModel(tiny_model(request.param))


def test_accessors_return_the_modules(tiny: tuple[str, HookedModel]) -> None:
    kind, model = tiny
    layers, attn, mlp, norm, unembed = EXPECTED[kind](model.hf)
    for i in range(model.dims.n_layers):
        assert model.block(i) is layers[i]
        assert model.attn(i) is getattr(layers[i], attn)
        assert model.mlp(i) is getattr(layers[i], mlp)
    assert model.final_norm is norm
    assert model.unembed is unembed
    assert model.embed is model.hf.get_input_embeddings()  # HF's own answer, not the family file
    assert model.embed.weight.shape == (model.dims.d_vocab, model.dims.d_model)
    assert model.unembed.weight.shape == (model.dims.d_vocab, model.dims.d_model)


def test_block_out_of_range(tiny: tuple[str, HookedModel]) -> None:
    _, model = tiny
    n = model.dims.n_layers
    for bad in (-1, n):
        with pytest.raises(MechscopeError, match=rf"layer must lie in \[0, {n}\)"):
            model.block(bad)


def _count_layer_calls(model: HookedModel) -> tuple[list[int], list]:
    ran: list[int] = []
    handles = [
        model.block(i).register_forward_hook(lambda *a, i=i: ran.append(i))
        for i in range(model.dims.n_layers)
    ]
    handles.append(model.final_norm.register_forward_hook(lambda *a: ran.append(-1)))
    return ran, handles


def test_stop_at_layer_matches_full_run_and_runs_no_later_layer(
    tiny: tuple[str, HookedModel],
) -> None:
    _, model = tiny
    n = model.dims.n_layers
    tokens = torch.randint(
        0, model.dims.d_vocab, (2, 7), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        _, full = model.run_with_cache(tokens)
    for stop in range(n + 1):
        ran, handles = _count_layer_calls(model)
        try:
            with torch.no_grad():
                resid, cache = model.run_with_cache(tokens, stop_at_layer=stop)
        finally:
            for h in handles:
                h.remove()
        assert ran == list(range(stop)), f"stop_at_layer={stop} ran layers {ran}"
        expected = full[f"blocks.{stop}.hook_resid_pre"] if stop < n else None
        if expected is None:
            expected = full[f"blocks.{n - 1}.hook_resid_post"]
        assert torch.equal(resid, expected)
        earlier = [
            s for s in full if model.sites[s].layer is not None and model.sites[s].layer < stop
        ]
        assert earlier or stop == 0
        for name in earlier:
            assert torch.equal(cache[name], full[name]), name
        later = [
            s for s in cache if model.sites[s].layer is not None and model.sites[s].layer > stop
        ]
        assert not later
    with torch.no_grad():
        negative, _ = model.run_with_cache(tokens, stop_at_layer=-1)  # eager, as `full`
    assert torch.equal(negative, full[f"blocks.{n - 1}.hook_resid_pre"])
    with pytest.raises(MechscopeError, match="stop_at_layer must lie"):
        model(tokens, stop_at_layer=n + 1)


def test_hooks_stop_after_every_listed_site() -> None:
    model = HookedModel(tiny_model("llama"))
    tokens = torch.tensor([[1, 2, 3, 4]])
    seen: list[str] = []
    ran, handles = _count_layer_calls(model)
    after = []
    try:
        with model.hooks(
            [("blocks.*.hook_mlp_out", lambda t, hook: seen.append(hook.name))],
            stop_after=["blocks.1.hook_mlp_out", "blocks.0.hook_resid_post"],
        ):
            model(tokens)
            after.append("not reached")
    finally:
        for h in handles:
            h.remove()
    assert seen == ["blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"]
    assert ran == [0]  # layer 1's forward hook never returned: stopped inside it
    assert after == []
    # the hooks are gone and the next forward is a full one
    with torch.no_grad():
        assert torch.equal(model(tokens), model.hf(input_ids=tokens).logits)


def test_mlp_hook_in_is_the_mlp_modules_input(tiny: tuple[str, HookedModel]) -> None:
    """``blocks.L.mlp.hook_in`` (read by published transcoders) is what the MLP module receives."""
    kind, model = tiny
    tokens = torch.tensor([[5, 3, 8, 1, 9, 2]])
    seen: dict[int, torch.Tensor] = {}
    handles = [
        # OPT's layer has no MLP module: its MLP input is fc1's, as rows [batch*pos d_model]
        (model.block(i).fc1 if kind == "opt" else model.mlp(i)).register_forward_pre_hook(
            lambda m, args, kwargs, i=i: seen.__setitem__(
                i, (args or (kwargs["hidden_states"],))[0]
            ),
            with_kwargs=True,
        )
        for i in range(model.dims.n_layers)
    ]
    try:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names="blocks.*.mlp.hook_in")
    finally:
        for h in handles:
            h.remove()
    for i in range(model.dims.n_layers):
        got = cache[f"blocks.{i}.mlp.hook_in"]
        assert torch.equal(got, seen[i].reshape(got.shape))
        assert cache[f"blocks.{i}.mlp.hook_in"].shape[-1] == model.dims.d_model


def test_fallback_has_no_attn_or_mlp_accessor() -> None:
    from transformers import AutoModelForCausalLM, BloomConfig

    hf = AutoModelForCausalLM.from_config(
        BloomConfig(vocab_size=64, hidden_size=32, n_layer=2, n_head=4)
    )
    model = HookedModel(hf)
    assert model.block(1) is hf.transformer.h[1]
    assert model.embed is hf.transformer.word_embeddings
    for accessor in (model.attn, model.mlp):
        with pytest.raises(MechscopeError, match="generic fallback"):
            accessor(0)
