"""The ``dla`` kind's vectors: which components drive the model's own prediction at each token.

A backdoor takes over the output: at the trigger's end the planted layers, not the ones that
model ordinary text, write the top logit. The vector a ``dla`` detector reads at a token is the
direct logit attribution (Elhage et al. 2021; :mod:`mechscope.attribution.dla`) of the model's
top next-token logit to every component that writes to the residual stream, in the order of the
forward pass: the embedding, then attention 0, MLP 0, attention 1, MLP 1, ... With the final
norm's divisor frozen at its value in the run, the logits are linear in the residual stream, so
the terms sum exactly to the top logit (less the norm's and unembedding's bias terms, which the
embedding-to-last-layer components do not carry). Detector layer ``L`` reads the ``2 L + 3``
terms of the embedding and layers 0..L; a Mahalanobis distance fitted on trusted tokens scores
them (the ``dla`` entry of :data:`mechscope.anomaly.kinds.KINDS`), and a term of the score names
a component: 0 the embedding, ``2 l + 1`` attention ``l``, ``2 l + 2`` the MLP of layer ``l``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["component_name", "dla_sites", "dla_width", "top_logit_dla"]


def dla_sites(n_layers: int, has_pos_embed: bool = False) -> list[str]:
    """The sites the profile reads: the embeddings, the final norm's scale and every write."""
    names = ["hook_embed", "ln_final.hook_scale"] + (["hook_pos_embed"] if has_pos_embed else [])
    return names + [f"blocks.{i}.hook_{k}_out" for i in range(n_layers) for k in ("attn", "mlp")]


def dla_width(layer: int) -> int:
    """The number of terms detector layer ``layer`` reads (embedding, layers 0..layer)."""
    return 2 * layer + 3


def component_name(index: int) -> str:
    """``embed``, ``attn.L`` or ``mlp.L`` for a term's index."""
    if index == 0:
        return "embed"
    layer, kind = divmod(index - 1, 2)
    return f"{'attn' if kind == 0 else 'mlp'}.{layer}"


@torch.no_grad()
def top_logit_dla(model: Any, acts: dict[str, Tensor], logits: Tensor) -> Tensor:
    """[batch pos 2 n_layers + 1]: each component's direct attribution to the top logit at each
    token, from the cached sites of :func:`dla_sites` and the logits [batch pos vocab]."""
    n = model.dims.n_layers
    w_u = model.unembed.weight
    top = logits.argmax(-1).to(w_u.device)
    direction = w_u[top].float() * (model.final_norm.weight.float() + model.family.norm_offset)
    direction = direction / model.dims.logit_divisor
    if model.dims.norm == "layer":  # centring the direction == centring every component
        direction = direction - direction.mean(-1, keepdim=True)
    direction = direction / acts["ln_final.hook_scale"].float().to(direction.device)
    embed = acts["hook_embed"].float()
    if "hook_pos_embed" in acts:
        embed = embed + acts["hook_pos_embed"].float()
    writes = [embed] + [
        acts[f"blocks.{i}.hook_{k}_out"].float() for i in range(n) for k in ("attn", "mlp")
    ]
    return torch.stack([(w.to(direction.device) * direction).sum(-1) for w in writes], -1)
