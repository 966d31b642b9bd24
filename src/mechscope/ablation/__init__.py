"""Ablations of heads, MLPs and neurons: zero, mean and resample, one file each.

    logits = ablate(model, tokens, "L9H6,L9H9,MLP10", "mean", reference=abc_tokens)
    logits = keep_only(model, tokens, circuit, "mean", reference=abc_tokens)
    effect = ablation_effect(model, batch, "L27H*,L28H*,L29H*")   # logit diff before/after

Node specs are parsed by :mod:`mechscope.ablation.nodes`; kinds are listed in
:data:`ABLATIONS`; :func:`ablation_hooks` gives the hooks for combining with other interventions.
"""

from mechscope.ablation.api import AblationEffect, ablate, ablation_effect, keep_only
from mechscope.ablation.hooks import (
    ABLATIONS,
    ablated,
    ablation_hooks,
    node_sites,
    reference_cache,
)
from mechscope.ablation.nodes import (
    GRAMMAR,
    Node,
    all_components,
    complement,
    expand,
    format_nodes,
    parse_node,
    parse_nodes,
)

__all__ = [
    "ABLATIONS",
    "GRAMMAR",
    "AblationEffect",
    "Node",
    "ablate",
    "ablated",
    "ablation_effect",
    "ablation_hooks",
    "all_components",
    "complement",
    "expand",
    "format_nodes",
    "keep_only",
    "node_sites",
    "parse_node",
    "parse_nodes",
    "reference_cache",
]
