"""Expert pruning and merging guided by the MoE statistics, evaluated against the full model.

Pruning removes ``n`` experts from every layer (their router logit is ``-inf``, so their tokens
go to the next experts by the router's own rule), choosing in each layer the experts with the
lowest score. Orders compared: the causal ablation effect (``effect``), the load (``load``) and a
seeded random order (``random``). Merging folds the most CKA-similar pair of a layer into one
expert (:func:`mechscope.moe.interventions.merged`) and is compared with pruning the dropped
expert alone. Each variant reports the change of the mean next-token loss and the top-1
agreement of its predictions with the full model's, on held-out windows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from mechscope.moe.interventions import merged, reroute_hooks

__all__ = ["evaluate_hooks", "merge_pairs", "prune_curve", "prune_plan"]


@torch.no_grad()
def evaluate_hooks(
    model: Any, tokens: Tensor, hooks: Sequence[Any], reference: Tensor | None = None
) -> dict[str, float]:
    """Mean next-token loss and top-1 agreement with ``reference`` predictions under ``hooks``."""
    with model.hooks(list(hooks)):
        logits = model(tokens).float()
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), tokens[:, 1:].reshape(-1)
    )
    pred = logits.argmax(-1)
    agree = float((pred == reference).float().mean()) if reference is not None else 1.0
    return {"loss": float(loss), "agreement": agree, "_pred": pred}  # type: ignore[dict-item]


def prune_plan(scores: Tensor, n: int) -> dict[int, list[int]]:
    """The ``n`` lowest-scoring experts of each layer of ``scores`` [layer expert]."""
    return {L: scores[L].argsort()[:n].tolist() for L in range(scores.shape[0])}


def prune_curve(
    model: Any,
    tokens: Tensor,
    scores: Mapping[str, Tensor],
    max_pruned: int | None = None,
    seed: int = 0,
) -> dict[str, list[dict[str, float]]]:
    """Loss change and agreement after pruning 1..``max_pruned`` experts per layer by each order
    in ``scores`` (name -> [layer expert], lowest pruned first) and by a random order."""
    n_exp, k = model.dims.n_experts, model.dims.top_k
    max_pruned = n_exp - k if max_pruned is None else min(max_pruned, n_exp - k)
    base = evaluate_hooks(model, tokens, [])
    g = torch.Generator().manual_seed(seed)
    orders = {**scores, "random": torch.rand(model.dims.n_layers, n_exp, generator=g)}
    out: dict[str, list[dict[str, float]]] = {}
    for name, s in orders.items():
        rows = []
        for n in range(1, max_pruned + 1):
            r = evaluate_hooks(model, tokens, reroute_hooks(prune_plan(s, n)), base["_pred"])
            rows.append({"n_pruned": n, "loss_delta": r["loss"] - base["loss"],
                         "agreement": r["agreement"]})  # fmt: skip
        out[name] = rows
    return out


def merge_pairs(
    model: Any, tokens: Tensor, similarity: Tensor, load: Tensor
) -> list[dict[str, Any]]:
    """Per layer, merge the most similar pair (``similarity`` [layer expert expert]), keeping the
    more loaded expert, with ``alpha`` its share of the pair's load; compared with pruning the
    dropped expert alone."""
    base = evaluate_hooks(model, tokens, [])
    out = []
    for L in range(similarity.shape[0]):
        sim = similarity[L].clone().fill_diagonal_(-float("inf"))
        i, j = divmod(int(sim.argmax()), sim.shape[0])
        keep, drop = (i, j) if load[L, i] >= load[L, j] else (j, i)
        alpha = float(load[L, keep] / (load[L, keep] + load[L, drop]).clamp_min(1))
        with merged(model, L, keep, drop, alpha) as hooks:
            m = evaluate_hooks(model, tokens, hooks, base["_pred"])
        p = evaluate_hooks(model, tokens, reroute_hooks({L: [drop]}), base["_pred"])
        out.append({
            "layer": L, "keep": keep, "drop": drop, "cka": float(similarity[L, keep, drop]),
            "merge_loss_delta": m["loss"] - base["loss"], "merge_agreement": m["agreement"],
            "prune_loss_delta": p["loss"] - base["loss"], "prune_agreement": p["agreement"],
        })  # fmt: skip
    return out


def prune_report(model: Any, result: Any, tokens: Tensor, max_pruned: int | None = None) -> dict:
    """Pruning by reroute effect / load / random and merging of the most similar pairs, guided by
    ``result`` (a :class:`~mechscope.moe.MoEResult` with its causal check and similarity) and
    evaluated on ``tokens``: windows the guide did not read."""
    from mechscope.errors import MechscopeError

    if result.effects is None or result.similarity is None:
        raise MechscopeError("pruning needs the causal check and similarity (windows > 0)")
    r = result.routing
    load = torch.stack([torch.bincount(r.indices[L].reshape(-1), minlength=r.n_experts)
                        for L in range(r.n_layers)])  # fmt: skip
    scores = {"reroute_effect": result.effects.reroute, "load": load.double()}
    return {
        "n_eval_tokens": tokens.numel(),
        "prune": prune_curve(model, tokens, scores, max_pruned),
        "merge": merge_pairs(model, tokens, result.similarity, load),
    }
