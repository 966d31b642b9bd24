"""Expert pruning and merging guided by the MoE statistics, evaluated like ``mechscope compress``.

Pruning removes ``n`` experts from every layer (their router logit is ``-inf``, so their tokens
go to the next experts by the router's own rule), choosing in each layer the experts with the
lowest guide score. Guides (:func:`guides`, each ``[layer expert]``): the loss change from
rerouting (``reroute_effect``) or ablating (``ablate_effect``) the expert, its ``load`` (tokens
routed to it), its ``router_weight`` (mean router softmax probability over tokens) and a seeded
``random`` order (several seeds; each prompt's value averaged over them). Merging
(``cka_merge``) folds the ``n`` most CKA-similar disjoint pairs of each layer into one expert each
(:func:`mechscope.moe.interventions.merged`, keeping the more loaded one with its load share as
weight).

Every point is evaluated with :func:`mechscope.compress.evaluate.measure` on windows (and task
prompts) the guides did not read: per-window held-out loss, KL to the full model and top-1
agreement, and per-prompt task logit differences; each with its 95% bootstrap interval over
prompts, its paired change from the full model and its paired difference from the random order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mechscope.compress.evaluate import measure, paired, reference_logits, summarise
from mechscope.moe.interventions import merged, reroute_hooks

__all__ = ["guides", "merge_curve", "merge_pairs", "prune_curves", "prune_plan", "prune_report"]

Values = dict[str, list[float]]


def prune_plan(scores: Tensor, n: int) -> dict[int, list[int]]:
    """The ``n`` lowest-scoring experts of each layer of ``scores`` [layer expert]."""
    return {L: scores[L].argsort(stable=True)[:n].tolist() for L in range(scores.shape[0])}


def guides(result: Any) -> dict[str, Tensor]:
    """``{name: [layer expert]}`` scores of a :class:`~mechscope.moe.MoEResult` (lowest first
    pruned): reroute and ablation effect, load, router weight."""
    r = result.routing
    load = torch.stack([torch.bincount(r.indices[L].reshape(-1), minlength=r.n_experts)
                        for L in range(r.n_layers)])  # fmt: skip
    out = {"load": load.double(), "router_weight": r.logits.softmax(-1).mean(1).double()}
    if result.effects is not None:
        out = {"reroute_effect": result.effects.reroute, "ablate_effect": result.effects.ablate,
               **out}  # fmt: skip
    return out


def _max_removed(model: Any, max_n: int | None) -> int:
    top = model.dims.n_experts - model.dims.top_k
    return top if max_n is None else min(max_n, top)


def prune_curves(
    model: Any,
    sets: Mapping[str, Any],
    scores: Mapping[str, Tensor],
    max_pruned: int | None = None,
    seeds: int = 5,
    reference: Tensor | None = None,
) -> dict[str, list[Values]]:
    """Per-prompt values (:func:`~mechscope.compress.evaluate.measure`) after pruning
    ``1..max_pruned`` experts per layer by each order of ``scores`` and by ``seeds`` random
    orders (averaged per prompt)."""
    n_max = _max_removed(model, max_pruned)
    shape = (model.dims.n_layers, model.dims.n_experts)
    rand = [torch.rand(shape, generator=torch.Generator().manual_seed(s)) for s in range(seeds)]
    out: dict[str, list[Values]] = {}
    for name, s in scores.items():
        out[name] = [measure(model, sets, reroute_hooks(prune_plan(s, n)), reference)
                     for n in range(1, n_max + 1)]  # fmt: skip
    if seeds:
        out["random"] = []
        for n in range(1, n_max + 1):
            runs = [measure(model, sets, reroute_hooks(prune_plan(r, n)), reference) for r in rand]
            out["random"].append({k: np.mean([r[k] for r in runs], 0).tolist() for k in runs[0]})
    return out


def merge_plan(similarity: Tensor, load: Tensor, n: int) -> dict[int, list[tuple[int, int]]]:
    """Per layer, the ``n`` most similar disjoint pairs ``(keep, drop)``, keeping the more loaded
    expert of each pair (``similarity`` [layer expert expert], ``load`` [layer expert])."""
    plan = {}
    for L in range(similarity.shape[0]):
        sim = similarity[L].clone().fill_diagonal_(-float("inf"))
        used: set[int] = set()
        pairs = []
        for flat in sim.flatten().argsort(descending=True, stable=True).tolist():
            i, j = divmod(flat, sim.shape[0])
            if len(pairs) == n:
                break
            if i < j and not {i, j} & used:
                used |= {i, j}
                pairs.append((i, j) if load[L, i] >= load[L, j] else (j, i))
        plan[L] = pairs
    return plan


@contextmanager
def merged_all(model: Any, plan: Mapping[int, Sequence[tuple[int, int]]], load: Tensor
               ) -> Iterator[list[Any]]:  # fmt: skip
    """Every merge of ``plan`` at once; yields the routing hooks; the weights are restored."""
    with ExitStack() as stack:
        hooks: list[Any] = []
        for L, pairs in plan.items():
            for keep, drop in pairs:
                alpha = float(load[L, keep] / (load[L, keep] + load[L, drop]).clamp_min(1))
                hooks += stack.enter_context(merged(model, L, keep, drop, alpha))
        yield hooks


def merge_curve(
    model: Any,
    sets: Mapping[str, Any],
    similarity: Tensor,
    load: Tensor,
    max_merged: int | None = None,
    reference: Tensor | None = None,
) -> list[Values]:
    """Per-prompt values after ``1..max_merged`` CKA-guided merges per layer."""
    n_max = min(_max_removed(model, max_merged), model.dims.n_experts // 2)
    out = []
    for n in range(1, n_max + 1):
        with merged_all(model, merge_plan(similarity, load, n), load) as hooks:
            out.append(measure(model, sets, hooks, reference))
    return out


def merge_pairs(
    model: Any, sets: Mapping[str, Any], similarity: Tensor, load: Tensor
) -> list[dict[str, Any]]:
    """Per layer alone, merging its most similar pair against pruning the dropped expert:
    the change of the mean held-out loss."""
    base = np.mean(measure(model, sets)["lm"])
    out = []
    for L, pairs in merge_plan(similarity, load, 1).items():
        (keep, drop), one = pairs[0], {L: pairs[:1]}
        with merged_all(model, one, load) as hooks:
            m = np.mean(measure(model, sets, hooks)["lm"])
        p = np.mean(measure(model, sets, reroute_hooks({L: [drop]}))["lm"])
        out.append({"layer": L, "keep": keep, "drop": drop, "cka": float(similarity[L, keep, drop]),
                    "merge_loss_delta": float(m - base), "prune_loss_delta": float(p - base)})  # fmt: skip
    return out


def _point(n: int, v: Values, base: Values, rand: Values | None) -> dict[str, Any]:
    row: dict[str, Any] = {"n": n, "value": {k: summarise(x) for k, x in v.items()},
                           "delta": {k: paired(x, base[k]) for k, x in v.items() if k in base}}  # fmt: skip
    if rand is not None:
        row["vs_random"] = {k: paired(x, rand[k]) for k, x in v.items()}
    return row


def curve_table(curves: Mapping[str, list[Values]], base: Values) -> dict[str, list[dict]]:
    """Each curve's points: the mean and interval of every metric, its paired change from the
    full model (``delta``) and its paired difference from the random order (``vs_random``)."""
    rand = curves.get("random")
    return {name: [_point(i + 1, v, base, rand[i] if rand and name != "random" else None)
                   for i, v in enumerate(points)] for name, points in curves.items()}  # fmt: skip


def prune_report(
    model: Any, result: Any, sets: Mapping[str, Any], max_pruned: int | None = None,
    seeds: int = 5,
) -> dict[str, Any]:  # fmt: skip
    """Pruning by every guide and random, CKA-guided merging, and the per-layer merge-vs-prune
    table, guided by ``result`` (a :class:`~mechscope.moe.MoEResult` with its causal check and
    similarity) and evaluated on ``sets`` (``"lm"``: held-out windows; task batches)."""
    from mechscope.errors import MechscopeError

    if result.effects is None or result.similarity is None:
        raise MechscopeError("pruning needs the causal check and similarity (windows > 0)")
    ref = reference_logits(model, sets["lm"])
    base = measure(model, sets)
    g = guides(result)
    curves = prune_curves(model, sets, g, max_pruned, seeds, ref)
    curves["cka_merge"] = merge_curve(model, sets, result.similarity, g["load"], max_pruned, ref)
    return {
        "n_eval_windows": int(sets["lm"].shape[0]),
        "n_eval_tokens": int(sets["lm"].numel()),
        "random_seeds": seeds,
        "base": {k: summarise(v) for k, v in base.items()},
        "curves": curve_table(curves, base),
        "merge": merge_pairs(model, sets, result.similarity, g["load"]),
    }
