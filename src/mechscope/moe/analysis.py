"""``moe_analysis``: every routing statistic of every MoE layer, with its causal check.

Steps: collect the routing over the windows (:mod:`~mechscope.moe.routing`); per layer compute
load and balance, router entropy, co-activation and specialisation by token class and by domain
(:mod:`~mechscope.moe.stats`); expert similarity by output CKA on the first ``cka_windows``
windows (:mod:`~mechscope.moe.similarity`); and the loss (and task) effect of ablating and of
rerouting each expert on the first ``causal_windows`` windows (:mod:`~mechscope.moe.causal`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.moe import stats
from mechscope.moe.causal import ExpertEffects, expert_effects
from mechscope.moe.classes import token_classes
from mechscope.moe.routing import Routing, collect_routing
from mechscope.moe.similarity import expert_cka

__all__ = ["MoEResult", "moe_analysis"]


def _spearman(a: Tensor, b: Tensor) -> float | None:
    from scipy.stats import spearmanr

    if a.unique().numel() < 2 or b.unique().numel() < 2:
        return None  # undefined when either side is constant (JSON null)
    return float(spearmanr(a.double().numpy(), b.double().numpy()).statistic)


def _rows(t: Tensor) -> list[list[float]]:
    return [[round(float(v), 6) for v in row] for row in t]


@dataclass(frozen=True)
class MoEResult:
    """Routing statistics [per layer] with class/domain labels, similarity and causal effects."""

    routing: Routing
    classes: list[str]
    class_labels: Tensor  # [token]
    domains: list[str]
    domain_labels: Tensor | None  # [token]
    similarity: Tensor | None  # [layer expert expert]
    effects: ExpertEffects | None

    def class_load(self) -> Tensor:
        """Share of each class's routings going to each expert [layer class expert]."""
        r = self.routing
        k = len(self.classes)
        return torch.stack([
            stats.specialisation(r.indices[L], self.class_labels, k, r.n_experts) * r.top_k / r.n_experts
            for L in range(r.n_layers)
        ])  # fmt: skip

    def layer_dict(self, L: int) -> dict[str, Any]:
        r = self.routing
        idx, logits, n = r.indices[L], r.logits[L], r.n_experts
        load = stats.load(idx, n)
        spec = {"token_class": {"labels": self.classes, "ratio": _rows(
            stats.specialisation(idx, self.class_labels, len(self.classes), n))}}  # fmt: skip
        if self.domain_labels is not None:
            ratio = stats.specialisation(idx, self.domain_labels, len(self.domains), n)
            spec["domain"] = {"labels": self.domains, "ratio": _rows(ratio)}
        out: dict[str, Any] = {
            "layer": L,
            "load": load.tolist(),
            "balance": stats.balance(idx, logits),
            **stats.entropy(logits),
            "coactivation": stats.coactivation(idx, n).tolist(),
            "specialisation": spec,
        }
        if self.similarity is not None:
            out["similarity"] = _rows(self.similarity[L])
        e = self.effects
        if e is not None:
            causal: dict[str, Any] = {
                "loss_delta_ablate": [round(float(v), 6) for v in e.ablate[L]],
                "loss_delta_reroute": [round(float(v), 6) for v in e.reroute[L]],
                "load_vs_effect_spearman": _spearman(load.double(), e.ablate[L]),
            }
            if e.ablate_by_label is not None:
                causal["loss_delta_ablate_by_class"] = _rows(e.ablate_by_label[L])
            if e.ablate_task is not None and e.reroute_task is not None:
                causal["task_delta_ablate"] = [round(float(v), 6) for v in e.ablate_task[L]]
                causal["task_delta_reroute"] = [round(float(v), 6) for v in e.reroute_task[L]]
            out["causal"] = causal
        return out

    def to_dict(self) -> dict[str, Any]:
        r = self.routing
        out: dict[str, Any] = {"n_experts": r.n_experts, "top_k": r.top_k, "n_tokens": r.n_tokens}
        if self.effects is not None:
            out["base_loss"] = self.effects.base_loss
            if self.effects.base_task is not None:
                out["base_task"] = self.effects.base_task
        out["layers"] = [self.layer_dict(L) for L in range(r.n_layers)]
        return out


def moe_analysis(
    model: Any,
    tokens: Tensor,
    *,
    domains: Sequence[str] | None = None,
    domain_labels: Tensor | None = None,
    classes: Mapping[int, str] | None = None,
    class_names: Sequence[str] | None = None,
    cka_windows: int = 8,
    causal_windows: int = 8,
    task: Any = None,
    batch_size: int = 8,
) -> MoEResult:
    """Analyse the routing of ``tokens`` [window pos] through every MoE layer of ``model``.

    ``domain_labels`` [window] names each window's domain (an index into ``domains``);
    ``classes`` maps token ids to class names (default: classes from the decoded text).
    ``cka_windows`` / ``causal_windows`` = 0 skip similarity / the causal check; ``task`` is
    ``(TaskBatch, metric_fn)`` for the task effect.
    """
    routing = collect_routing(model, tokens, batch_size)
    labels, names = token_classes(tokens, model.tokenizer, classes, class_names)
    dom = None
    if domain_labels is not None:
        dom = domain_labels.reshape(-1, 1).expand(-1, tokens.shape[1]).reshape(-1).long()
    sim = None
    if cka_windows > 0:
        sub = tokens[:cka_windows]
        sim = torch.stack([expert_cka(model, L, sub) for L in range(model.dims.n_layers)])
    effects = None
    if causal_windows > 0:
        sub = tokens[:causal_windows]
        effects = expert_effects(model, sub, labels=labels[: sub.numel()], n_labels=len(names),
                                 task=task, batch_size=batch_size)  # fmt: skip
    return MoEResult(routing, names, labels, list(domains or []), dom, sim, effects)
