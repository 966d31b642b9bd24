"""Per-head weights read from every fused layout reproduce the hooked q, k and v.

``attn.hook_q`` is the projection's output before rotary, so for a family whose attention input
norm has no bias, ``hook_q[..., h, :] == normalized(resid_pre) @ W_Q[h] + b_Q[h]`` with the
norm's weight folded into ``W_Q`` (and the same for k and v, repeated per query head).
"""

from __future__ import annotations

import pytest
import torch

from mechscope import HookedModel
from mechscope.heads.weights import head_weights
from mechscope.models.tiny import CONFIGS, VOCAB, tiny_model
from mechscope.sites.hooks import fused_slice

X = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(4))
KINDS = [k for k in CONFIGS if k not in ("gpt2", "olmo2")]  # Conv1D; OLMo 2 has no input norm


def projection_bias(model: HookedModel, layer: int, which: int) -> torch.Tensor | int:
    """The q, k or v bias per head [head d_head], sliced as the sites slice the projection."""
    f, d = model.family, model.dims
    block = model.hf.get_submodule(f"{f.layers}.{layer}")
    n = d.n_heads if which == 0 else d.n_kv_heads
    if f.qkv == "separate":
        bias = block.get_submodule((f.q, f.k, f.v)[which]).bias
        return 0 if bias is None else bias.view(n, d.d_head)
    bias = block.get_submodule(f.q).bias
    get = fused_slice(f.qkv, which, n, d.d_head, d.n_kv_heads)[0]
    return 0 if bias is None else get(bias[None])[0]


@pytest.mark.parametrize("kind", KINDS)
def test_head_weights_reproduce_q_k_v(kind: str) -> None:
    model = HookedModel(tiny_model(kind))
    layer = 1
    norm = model.hf.get_submodule(f"{model.family.layers}.{layer}.{model.family.ln1}")
    names = [f"blocks.{layer}.hook_resid_pre"] + [f"blocks.{layer}.attn.hook_{c}" for c in "qkv"]
    with torch.no_grad():
        _, cache = model.run_with_cache(X, names=names)
    x = cache[names[0]]
    if model.dims.norm == "layer":
        x = x - x.mean(-1, keepdim=True)
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-5)
    x = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    norm_bias = getattr(norm, "bias", None)
    w = head_weights(model, layer)
    rep = model.dims.n_heads // model.dims.n_kv_heads
    for which, weight in enumerate((w.W_Q, w.W_K, w.W_V)):
        got = torch.einsum("bpm,hmd->bphd", x, weight)
        if norm_bias is not None:  # the norm's bias goes through the projection too
            got = got + torch.einsum("m,hmd->hd", norm_bias / norm.weight, weight)
        hooked = cache[names[1 + which]]
        if which:
            hooked = hooked.repeat_interleave(rep, dim=2)
        bias = projection_bias(model, layer, which)
        if isinstance(bias, torch.Tensor) and which:
            bias = bias.repeat_interleave(rep, dim=0)
        torch.testing.assert_close(got + bias, hooked, atol=1e-4, rtol=1e-4, msg="qkv"[which])
