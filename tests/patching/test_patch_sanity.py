"""Checks of patching that can fail: known answers, errors, and chunking that changes nothing."""

from __future__ import annotations

import pytest
import torch

from mechscope import HookedModel, MechscopeError
from mechscope.models.tiny import VOCAB, tiny_model
from mechscope.patching import SWEEPS, patch

DIFF = 3  # the only position where the clean and corrupted prompts differ


def one_token_pair(batch: int = 2, pos: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(0, VOCAB, (batch, pos), generator=g)
    corrupt = clean.clone()
    corrupt[:, DIFF] = (clean[:, DIFF] + 11) % VOCAB
    return clean, corrupt


def last_logit_diff(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1, 5] - logits[:, -1, 7]


@pytest.fixture(scope="module")
def llama() -> HookedModel:
    return HookedModel(tiny_model("llama"))


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_known_answers(llama: HookedModel, direction: str) -> None:
    clean, corrupt = one_token_pair()
    r = patch(llama, clean, corrupt, last_logit_diff, "resid_pre", direction=direction)
    target, base = (r.clean, r.corrupt) if direction == "denoise" else (r.corrupt, r.clean)
    assert abs(r.clean - r.corrupt) > 1e-4, "the pair must differ in the metric"
    # Before layer 0 the residual is the embedding: patching the one differing position swaps
    # the whole input, and the other positions are identical in both runs.
    assert r.values[0, DIFF].item() == pytest.approx(target, abs=1e-6)
    others = [p for p in range(clean.shape[1]) if p != DIFF]
    torch.testing.assert_close(r.values[0, others], torch.full((len(others),), base))
    # Positions before the first difference carry the same activations in every layer.
    torch.testing.assert_close(r.values[:, :DIFF], torch.full_like(r.values[:, :DIFF], base))
    # After the last layer only the final norm and unembedding act, position by position.
    post = patch(llama, clean, corrupt, last_logit_diff, "resid_post", direction=direction)
    assert post.values[-1, -1].item() == pytest.approx(target, abs=1e-6)
    torch.testing.assert_close(post.values[:-1], r.values[1:])


def test_chunk_size_does_not_change_the_values(llama: HookedModel) -> None:
    clean, corrupt = one_token_pair()
    for sweep in ("resid_mid", "attn_head_pos", "pattern"):
        one = patch(llama, clean, corrupt, last_logit_diff, sweep, chunk=1)
        many = patch(llama, clean, corrupt, last_logit_diff, sweep)
        torch.testing.assert_close(one.values, many.values, atol=1e-5, rtol=0, msg=sweep)


def test_result_fields(llama: HookedModel) -> None:
    clean, corrupt = one_token_pair()
    d = llama.dims
    shapes = {
        "resid_pre": ("layer", "pos"),
        "attn_head": ("layer", "head"),
        "attn_head_pos": ("layer", "pos", "head"),
        "k": ("layer", "head"),
        "neuron": ("neuron",),
    }
    sizes = {"layer": d.n_layers, "pos": clean.shape[1], "head": d.n_heads, "neuron": d.d_mlp}
    for sweep, axes in shapes.items():
        r = patch(
            llama, clean, corrupt, last_logit_diff, sweep, layer=1 if sweep == "neuron" else None
        )
        want = [sizes[a] for a in axes]
        if sweep == "k":
            want[1] = d.n_kv_heads  # GQA: key/value heads
        assert (r.sweep, r.axes, r.direction) == (sweep, axes, "denoise")
        assert list(r.values.shape) == want, sweep
    assert set(SWEEPS) == {
        *shapes,
        "resid_mid",
        "resid_post",
        "attn_out",
        "mlp_out",
        "q",
        "v",
        "pattern",
    }


def test_neuron_sweep_equals_one_forward_per_neuron(llama: HookedModel) -> None:
    clean, corrupt = one_token_pair(pos=4)
    layer = 1
    r = patch(llama, clean, corrupt, last_logit_diff, "neuron", layer=layer, direction="noise")
    name = f"blocks.{layer}.mlp.hook_post"
    with torch.no_grad():
        _, cache = llama.run_with_cache(corrupt, name)
        for n in range(0, llama.dims.d_mlp, 7):

            def hook(act, _hook, n=n):
                act = act.clone()
                act[:, :, n] = cache[name][:, :, n]
                return act

            want = last_logit_diff(llama.run_with_hooks(clean, fwd_hooks=[(name, hook)])).mean()
            assert r.values[n].item() == pytest.approx(want.item(), abs=1e-5), n


def test_padding_and_attention_mask(llama: HookedModel) -> None:
    clean, corrupt = one_token_pair(pos=6)
    mask = torch.ones_like(clean)
    mask[1, 4:] = 0  # the second prompt is right-padded

    def at_last_real(logits: torch.Tensor) -> torch.Tensor:
        last = mask.sum(1) - 1
        rows = logits[torch.arange(2), last]
        return rows[:, 5] - rows[:, 7]

    r = patch(llama, clean, corrupt, at_last_real, "attn_out", attention_mask=mask, chunk=2)
    name = "blocks.1.hook_attn_out"
    with torch.no_grad():
        _, cache = llama.run_with_cache(clean, name, attention_mask=mask)

        def hook(act, _hook):
            act = act.clone()
            act[:, 2] = cache[name][:, 2]
            return act

        logits = llama.run_with_hooks(corrupt, fwd_hooks=[(name, hook)], attention_mask=mask)
    assert r.values[1, 2].item() == pytest.approx(at_last_real(logits).mean().item(), abs=1e-5)


def test_layers_subset_equals_the_full_sweep(llama: HookedModel) -> None:
    clean, corrupt = one_token_pair()
    for sweep in ("resid_pre", "attn_head_pos", "k"):
        full = patch(llama, clean, corrupt, last_logit_diff, sweep)
        part = patch(llama, clean, corrupt, last_logit_diff, sweep, layers=[1])
        assert part.values.shape == full.values.shape
        torch.testing.assert_close(part.values[1], full.values[1], atol=1e-6, rtol=0)
        assert part.values[0].isnan().all()
        row = part.to_dict()["values"][0]
        assert all(v is None for v in _flat(row))
        assert part.top(3)[0][0]["layer"] == 1


def _flat(x: object) -> list:
    return [y for v in x for y in _flat(v)] if isinstance(x, list) else [x]


def test_errors() -> None:
    model = HookedModel(tiny_model("gpt_neox"))  # parallel blocks: no resid_mid
    clean, corrupt = one_token_pair()
    with pytest.raises(MechscopeError, match="different token lengths"):
        patch(model, clean, corrupt[:, :4], last_logit_diff, "resid_pre")
    with pytest.raises(MechscopeError, match="no site"):
        patch(model, clean, corrupt, last_logit_diff, "resid_mid")
    with pytest.raises(MechscopeError, match="unknown sweep"):
        patch(model, clean, corrupt, last_logit_diff, "heads")
    with pytest.raises(MechscopeError, match="neuron sweep needs layer"):
        patch(model, clean, corrupt, last_logit_diff, "neuron")
    with pytest.raises(MechscopeError, match="only to the neuron sweep"):
        patch(model, clean, corrupt, last_logit_diff, "attn_head", layer=0)
    with pytest.raises(MechscopeError, match=r"layers= must be"):
        patch(model, clean, corrupt, last_logit_diff, "attn_head", layers=[5])
    with pytest.raises(MechscopeError, match="not layers="):
        patch(model, clean, corrupt, last_logit_diff, "neuron", layer=0, layers=[0])
    with pytest.raises(MechscopeError, match=r"\[batch\] tensor"):
        patch(model, clean, corrupt, lambda x: last_logit_diff(x).mean(), "attn_head")
    with pytest.raises(MechscopeError, match="direction"):
        patch(model, clean, corrupt, last_logit_diff, "attn_head", direction="forward")
    with pytest.raises(MechscopeError, match="chunk"):
        patch(model, clean, corrupt, last_logit_diff, "attn_head", chunk=0)
    with pytest.raises(MechscopeError, match="attention_mask"):
        patch(model, clean, corrupt, last_logit_diff, "attn_head", attention_mask=clean[:1])
