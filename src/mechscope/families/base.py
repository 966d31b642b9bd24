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

# separate: q/k/v projections; gpt2_fused: GPT-2's Conv1D [q | k | v]; concat: one Linear
# [q | k | v] with n_kv_heads-wide k and v (Phi-3, Falcon multi-query); neox_fused: per head
# [q | k | v] (GPT-NeoX, Falcon-7B-style); falcon_grouped: per kv group [q.. | k | v] (Falcon 40B+).
QKVLayout = Literal["separate", "gpt2_fused", "concat", "neox_fused", "falcon_grouped"]


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
    embed_scale: float = 1.0  # the model multiplies the embedding by this outside any module
    residual_scale: float = 1.0  # each block adds residual_scale * (its attn and MLP outputs)
    logit_divisor: float = 1.0  # logits = unembed(...) / logit_divisor (Granite's logits_scaling)
    logit_softcap: float | None = None  # logits = cap * tanh(logits / cap) (Gemma 2)

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
    ``shared_expert`` is an always-on dense expert (Qwen2-MoE) whose output the block multiplies
    by ``sigmoid(shared_expert_gate(x))`` before adding it to the routed experts' sum.
    """

    router: str
    experts: str
    route: Callable[[Any, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    expert_outputs: Callable[[Any, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    shared_expert: str | None = None
    shared_expert_gate: str | None = None


@dataclass(frozen=True)
class Family:
    """Module paths of one architecture family.

    Paths under ``layer_*`` and the attention/MLP fields are relative to one decoder layer.
    ``attn_write``/``mlp_write`` name the module whose output the layer adds to the residual when
    that is not ``attn``/``mlp`` itself (Gemma 2/3, OLMo 2: the post-norms). ``norm_offset`` is
    added to every RMSNorm weight (Gemma: ``x * (1 + w)``). A ``residual_only`` family (the
    generic fallback) knows only the embedding, the layer list, the final norm and unembedding.
    ``adapt`` returns the family for one config (config-dependent paths) or raises for a variant
    that is not supported.
    """

    name: str
    model_types: tuple[str, ...]
    dims: Callable[[Any], Dims]
    embed: str
    layers: str
    final_norm: str
    unembed: str
    ln1: str | None  # None: no norm before attention (OLMo 2)
    ln2: str | None  # the norm the MLP reads (ln1 itself where they share one); None: OLMo 2
    attn: str | None
    qkv: QKVLayout
    q: str | None  # the q projection, or the fused qkv projection
    k: str | None
    v: str | None
    o: str | None
    mlp: str | None  # module whose output is the MLP's write (OPT: the down projection fc2)
    mlp_in: str | None  # projection whose output is mlp.hook_pre (the activation's input)
    mlp_up: str | None  # the gated MLP's linear branch (mlp.hook_pre_linear)
    mlp_out: str | None  # projection whose input is mlp.hook_post
    pos_embed: str | None = None
    moe: MoESpec | None = None
    attn_write: str | None = None
    mlp_write: str | None = None
    norm_offset: float = 0.0
    mlp_gate_up: bool = False  # mlp_in is one projection [gate | up] (Phi-3)
    flat_mlp: bool = False  # the layer flattens [batch pos] to rows before its MLP (OPT)
    mlp_out_mutated: bool = False  # the layer adds into the MLP's output in place (Falcon)
    residual_only: bool = False
    adapt: Callable[[Family, Any], Family] | None = None

    def __post_init__(self) -> None:
        if self.residual_only:
            return
        if not (self.attn and self.q and self.o and self.mlp):
            raise ValueError(f"family {self.name}: attn, q, o and mlp paths are needed")
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
