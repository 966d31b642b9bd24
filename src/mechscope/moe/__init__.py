"""Mixture-of-experts analysis: routing statistics with the causal check beside each.

``moe_analysis(model, tokens)`` returns a :class:`MoEResult` whose ``to_dict()`` is
``{"n_experts", "top_k", "n_tokens", "layers": [{"layer", "load", "balance", "entropy",
"coactivation", "specialisation", "similarity", "causal"}]}``. ``expert_effects`` ablates and
reroutes experts; :mod:`mechscope.moe.prune` prunes and merges experts guided by these numbers;
:mod:`mechscope.moe.planted` trains a small MoE whose experts serve known token classes.
"""

from __future__ import annotations

from mechscope.moe.analysis import MoEResult, moe_analysis
from mechscope.moe.causal import ExpertEffects, expert_effects, token_losses
from mechscope.moe.classes import DEFAULT_CLASSES, classify_text, token_classes
from mechscope.moe.interventions import ablate_hooks, merge_hooks, merged, reroute_hooks
from mechscope.moe.routing import Routing, collect_routing
from mechscope.moe.similarity import expert_cka, linear_cka
from mechscope.moe.stats import balance, coactivation, entropy, load, specialisation

__all__ = [
    "DEFAULT_CLASSES",
    "ExpertEffects",
    "MoEResult",
    "Routing",
    "ablate_hooks",
    "balance",
    "classify_text",
    "coactivation",
    "collect_routing",
    "entropy",
    "expert_cka",
    "expert_effects",
    "linear_cka",
    "load",
    "merge_hooks",
    "merged",
    "moe_analysis",
    "reroute_hooks",
    "specialisation",
    "token_classes",
    "token_losses",
]
