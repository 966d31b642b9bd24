"""Grouped-query attention with ungrouped key/value ports (``Graph.from_dims(..., ungroup_kv=True)``).

Under GQA one key/value head serves ``rep = n_heads / n_kv_heads`` query heads; the ungrouped
graph gives query head ``h = g * rep + j`` its own key and value input (as TransformerLens's
``ungroup_grouped_query_attention`` does), although the model computes one k and v per group.

- Gradients: ``d metric / d k_g`` restricted to query head h is the backward pass of the
  attention scores of head h alone into ``attn.hook_k`` (autograd through the model's own RoPE and
  score product, once per j); the value gradient of head h is ``pattern_h^T dz_h`` because
  ``z_h = pattern_h v_g``.
- Interventions: the batch is repeated ``rep`` times; replica j computes the keys and values of
  every group from the port inputs of query heads ``g * rep + j``, and ``attn.hook_z`` then gives
  every replica head h's output from replica ``h % rep``, so all replicas stay equal downstream.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def split_kv_grads(
    grads: dict[str, Tensor], acts: dict[str, Tensor], live: dict[str, Tensor], layer: int, rep: int
) -> None:
    """Replace a layer's k/v gradients [batch pos kv d_head] by per-query-head ones [.. head ..]."""
    name = f"blocks.{layer}.attn."
    scores, k = live[name + "hook_attn_scores"], live[name + "hook_k"]
    b, p, n_kv, d = k.shape
    dk = k.new_zeros(b, p, n_kv * rep, d)
    dscores = grads.get(name + "hook_attn_scores")
    if dscores is not None:
        j_of_head = torch.arange(n_kv * rep, device=k.device) % rep
        for j in range(rep):
            sel = (j_of_head == j).to(dscores.dtype)[None, :, None, None]
            (g,) = torch.autograd.grad(scores, k, dscores * sel, retain_graph=True)
            dk[:, :, j::rep] = g
    grads[name + "hook_k"] = dk
    dz = grads.get(name + "hook_z")
    pattern = acts[name + "hook_pattern"]  # [batch head query_pos key_pos]
    if dz is None:
        dz = dk.new_zeros(b, p, n_kv * rep, d)
    grads[name + "hook_v"] = torch.einsum("bhqk,bqhd->bkhd", pattern, dz)


def per_replica(value: Tensor, need: Tensor, x: Tensor, rep: int) -> Tensor:
    """k or v for a repeated batch: replica j's group g takes port ``g * rep + j``.

    value: [rep*batch pos head d_head] per port; need: [head] bool; x: [rep*batch pos kv d_head].
    """
    n, p, h, d = value.shape
    idx = torch.arange(rep, device=value.device)
    v = value.view(rep, n // rep, p, h // rep, rep, d)[idx, :, :, :, idx]  # [rep batch pos kv d]
    keep = need.view(h // rep, rep).T[:, None, None, :, None]  # [rep 1 1 kv 1]
    return torch.where(keep, v.to(x.dtype), x.view(rep, n // rep, p, h // rep, d)).view_as(x)


def mix_z(z: Tensor, rep: int) -> Tensor:
    """z [rep*batch pos head d_head] with head h taken from replica ``h % rep`` in every replica."""
    n, p, h, d = z.shape
    heads = torch.arange(h, device=z.device)
    picked = z.view(rep, n // rep, p, h, d)[heads % rep, :, :, heads]  # [head batch pos d]
    return picked.permute(1, 2, 0, 3).repeat(rep, 1, 1, 1)
