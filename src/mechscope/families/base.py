"""What mechscope needs to know about an architecture family, as data.

A family file maps the canonical sites to Hugging Face module paths (relative to the model or to
one decoder layer) and says how fused projections are laid out. Nothing here runs a forward pass:
the HF modules do that, and :mod:`mechscope.sites` attaches hooks to them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

QKVLayout = Literal["separate", "gpt2_fused", "neox_fused"]


@dataclass(frozen=True)
class Dims:
    """Model dimensions read from the HF config."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    parallel: bool = False
    gated_mlp: bool = False
    norm: str = "layer"
    n_experts: int = 0
    top_k: int = 0

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}"
            )


@dataclass(frozen=True)
class MoESpec:
    """Where a mixture-of-experts block keeps its router and experts.

    ``route`` turns router logits [tokens expert] into (weights, indices) [tokens top_k] exactly as
    the HF router does, so that a rewritten router logit re-routes the tokens. ``expert_outputs``
    returns each expert's weighted contribution [tokens expert d_model] for given routing.
    """

    router: str
    experts: str
    route: Callable[[Any, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    expert_outputs: Callable[[Any, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Family:
    """Module paths of one architecture family.

    Paths under ``layer_*`` and the attention/MLP fields are relative to one decoder layer.
    """

    name: str
    model_types: tuple[str, ...]
    dims: Callable[[Any], Dims]
    embed: str
    layers: str
    final_norm: str
    unembed: str
    ln1: str
    ln2: str
    attn: str
    qkv: QKVLayout
    q: str  # the q projection, or the fused qkv projection
    k: str | None
    v: str | None
    o: str
    mlp: str
    mlp_in: str | None  # projection whose output is mlp.hook_pre (the activation's input)
    mlp_up: str | None  # the gated MLP's linear branch (mlp.hook_pre_linear)
    mlp_out: str | None  # projection whose input is mlp.hook_post
    pos_embed: str | None = None
    moe: MoESpec | None = None

    def __post_init__(self) -> None:
        if self.qkv == "separate" and not (self.k and self.v):
            raise ValueError(f"family {self.name}: separate q/k/v needs k and v paths")
        if self.moe is None and not (self.mlp_in and self.mlp_out):
            raise ValueError(f"family {self.name}: a dense MLP needs mlp_in and mlp_out paths")


def config_get(config: Any, *names: str, default: Any = None) -> Any:
    """The first attribute of ``config`` among ``names`` that is set."""
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default
