"""Per-head weight matrices read from the HF modules, in TransformerLens's row-vector convention.

``x @ W_Q[h]`` is head h's query for a residual vector x (after the layer's input norm), and
``z @ W_O[h]`` its output. Under grouped-query attention the key/value weights of a group are
repeated for each of its query heads (head h uses KV head ``h // (n_heads / n_kv_heads)``, as
``repeat_interleave`` in the attention function does). The input norm's weight is folded into
W_Q, W_K, W_V; for LayerNorm families W_O is centred (what the next LayerNorm does to it), and
the unembedding is centred over the vocabulary, as TransformerLens's ``fold_ln``,
``center_writing_weights`` and ``center_unembed`` do.
Biases, rotary embeddings and the norms' data-dependent scale are not part of the weights.

Layouts: ``separate`` (nn.Linear q/k/v/o: Llama, Mistral, Qwen2, Mixtral, Gemma, ...),
``gpt2_fused`` (Conv1D ``c_attn`` = [q | k | v]), ``concat`` (Linear [q | k | v] with GQA
widths: Phi-3, Falcon multi-query), ``neox_fused`` (Linear, per head [q | k | v]) and
``falcon_grouped`` (Linear, per kv group [q.. | k | v]). Gemma's norms fold in as ``1 + w``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel

Tensor = torch.Tensor


@dataclass(frozen=True)
class HeadWeights:
    """One layer's heads. W_Q/W_K/W_V: [head d_model d_head]; W_O: [head d_head d_model]."""

    W_Q: Tensor
    W_K: Tensor
    W_V: Tensor
    W_O: Tensor
    qk_norm: bool  # per-head q/k norms (Qwen3): the weights alone miss part of the QK circuit


def _linear_in(w: Tensor, n: int, d: int) -> Tensor:
    """nn.Linear weight [n*d, d_model] -> [n d_model d]."""
    return w.T.reshape(w.shape[1], n, d).permute(1, 0, 2)


def _raw(model: HookedModel, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    f, dims = model.family, model.dims
    n, n_kv, d = dims.n_heads, dims.n_kv_heads, dims.d_head
    block = model.block(layer)
    q_mod, o_mod = block.get_submodule(f.q), block.get_submodule(f.o)
    if f.qkv == "gpt2_fused" and not isinstance(q_mod, nn.Linear):  # Conv1D: x @ weight
        w = q_mod.weight  # [d_model 3*n*d]
        q, k, v = (t.reshape(-1, n, d).permute(1, 0, 2) for t in w.split(n * d, dim=1))
        return q, k, v, o_mod.weight.reshape(n, d, -1)
    if not isinstance(q_mod, nn.Linear) or not isinstance(o_mod, nn.Linear):
        raise MechscopeError(
            f"weight-based head scores need linear q/k/v/o projections; the {f.name} family's "
            "are not; use the pattern-based detectors (induction, previous_token, ...) instead"
        )
    o = o_mod.weight.T.reshape(n, d, -1)  # [n d d_model]
    rep = n // n_kv
    if f.qkv == "neox_fused":
        w = q_mod.weight.T.reshape(-1, n, 3, d)  # [d_model n 3 d]
        q, k, v = (w[:, :, i].permute(1, 0, 2) for i in range(3))
        return q, k, v, o
    if f.qkv == "concat":  # Phi-3, Falcon multi-query: [q | k | v], k and v n_kv heads wide
        wq, wk, wv = q_mod.weight.split([n * d, n_kv * d, n_kv * d])
        k, v = (_linear_in(w, n_kv, d).repeat_interleave(rep, dim=0) for w in (wk, wv))
        return _linear_in(wq, n, d), k, v, o
    if f.qkv == "falcon_grouped":  # per kv group [q * rep | k | v]
        w = q_mod.weight.T.reshape(-1, n_kv, rep + 2, d)  # [d_model n_kv rep+2 d]
        q = w[:, :, :rep].reshape(-1, n, d).permute(1, 0, 2)
        k, v = (w[:, :, i].permute(1, 0, 2).repeat_interleave(rep, dim=0) for i in (-2, -1))
        return q, k, v, o
    if f.qkv != "separate":
        raise MechscopeError(f"weight-based head scores do not support the {f.qkv} layout")
    k_mod, v_mod = block.get_submodule(f.k), block.get_submodule(f.v)
    k = _linear_in(k_mod.weight, n_kv, d).repeat_interleave(rep, dim=0)
    v = _linear_in(v_mod.weight, n_kv, d).repeat_interleave(rep, dim=0)
    return _linear_in(q_mod.weight, n, d), k, v, o


def norm_weight(model: HookedModel, norm: nn.Module | None) -> Tensor:
    """The elementwise weight of a norm module [d_model] (ones if it has none or no norm).

    Gemma's norms scale by ``1 + w``: the family's ``norm_offset`` is added.
    """
    w = None if norm is None else getattr(norm, "weight", None)
    if w is None:
        return torch.ones(model.dims.d_model)
    return w.detach().float() + model.family.norm_offset


def head_weights(model: HookedModel, layer: int) -> HeadWeights:
    """The heads of ``layer`` with the input norm folded in (see the module docstring)."""
    if not 0 <= layer < model.dims.n_layers:
        raise MechscopeError(f"layer must lie in [0, {model.dims.n_layers}), got {layer}")
    with torch.no_grad():
        q, k, v, o = (t.detach().float() for t in _raw(model, layer))
        ln1 = model.family.ln1
        gamma = norm_weight(model, ln1 and model.block(layer).get_submodule(ln1))
        q, k, v = (t * gamma[None, :, None] for t in (q, k, v))
        if model.dims.norm == "layer":
            o = o - o.mean(-1, keepdim=True)
    attn = model.attn(layer)
    qk_norm = any(hasattr(attn, a) for a in ("q_norm", "k_norm", "q_layernorm"))
    return HeadWeights(q, k, v, o, qk_norm)


def all_head_weights(model: HookedModel) -> list[HeadWeights]:
    return [head_weights(model, layer) for layer in range(model.dims.n_layers)]


def normalized_embedding(model: HookedModel, tokens: Tensor | None = None) -> Tensor:
    """Token embeddings [token d_model] as a norm sees them (centred for LayerNorm, unit RMS).

    The norm's own weight is left out (it is folded into each layer's W_Q/W_K/W_V).
    """
    e = model.embed.weight.detach().float()
    if tokens is not None:
        e = e[tokens]
    if model.dims.norm == "layer":
        e = e - e.mean(-1, keepdim=True)
    return e / e.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()


def unembedding(model: HookedModel, tokens: Tensor | None = None) -> Tensor:
    """W_U [d_model token], final norm's weight folded in, centred over the vocabulary.

    Centring (TransformerLens's ``center_unembed``) subtracts each source's mean logit, which the
    softmax ignores.
    """
    w = model.unembed.weight.detach().float()  # [vocab d_model]
    u = w.T * norm_weight(model, model.final_norm)[:, None]
    u = u - u.mean(1, keepdim=True)
    return u if tokens is None else u[:, tokens]
