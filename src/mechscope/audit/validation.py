"""Section 5, validation: the causal checks behind each task's claims, each against a control.

For every task whose circuit was found (section 4):

1. **Faithfulness** of the EAP-IG circuit (measured by :func:`mechscope.circuits.discover`) and
   its curve, against ``control_seeds`` random circuits with the same number of edges, drawn
   uniformly from the model's graph (:class:`mechscope.circuits.faithfulness.Evaluator`). A
   circuit that explains the behaviour is far more faithful than a random one of its size.
2. **Ablation** (:func:`mechscope.ablation.ablation_effect`, mean ablation over the task's clean
   prompts): the ``ablate_heads`` heads with the largest direct logit attribution, against
   ``control_seeds`` random sets of as many other heads. The claim "these heads carry the
   answer" predicts a larger drop of the logit difference than the random sets give.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mechscope.audit.config import AuditContext, slug
from mechscope.models.hooked import HookedModel
from mechscope.viz import render, save_png
from mechscope.viz.html import figure_uri

__all__ = ["random_circuit_faithfulness", "task_validation", "top_heads"]


def random_circuit_faithfulness(
    model: HookedModel, batch: Any, n_edges: int, seeds: int, seed: int = 0
) -> list[float]:
    """Faithfulness of ``seeds`` random circuits of ``n_edges`` edges of the model's graph."""
    from mechscope.circuits.faithfulness import Evaluator
    from mechscope.circuits.graph import Graph
    from mechscope.tasks.metrics import logit_diff

    graph = Graph.from_dims(model.dims)
    ev = Evaluator(model, batch, logit_diff, graph)
    allowed = graph.edge_mask.flatten().nonzero().flatten()
    out = []
    for s in range(seeds):
        gen = torch.Generator().manual_seed(seed * 1000 + s)
        pick = allowed[torch.randperm(len(allowed), generator=gen)[:n_edges]]
        mask = torch.zeros(graph.edge_mask.numel(), dtype=torch.bool)
        mask[pick] = True
        out.append(float(ev.faithfulness(mask.view_as(graph.edge_mask))))
    return out


def top_heads(dla: list[list[float]], k: int) -> list[tuple[int, int]]:
    """The ``k`` heads ``(layer, head)`` of largest direct logit attribution (signed: toward the
    answer), ties broken by position."""
    values = np.asarray(dla, dtype=np.float64)
    order = sorted(np.ndindex(values.shape), key=lambda lh: (-values[lh], lh))
    return [(int(layer), int(head)) for layer, head in order[:k]]


def _spec(heads: list[tuple[int, int]]) -> str:
    return ",".join(f"L{layer}H{head}" for layer, head in heads)


def _ablations(model: HookedModel, batch: Any, top: list[tuple[int, int]], cfg: Any) -> dict:
    """Mean-ablate the top heads and ``control_seeds`` random sets of as many other heads. With
    two or more prompts: the 95% bootstrap interval of the top heads' change and the paired
    sign-flip p-value of (top change - mean random change) per prompt (the shuffle swaps the
    labels "top heads" / "random heads" within each prompt)."""
    from mechscope.ablation import ablation_effect
    from mechscope.stats import signflip_pvalues

    effect = ablation_effect(model, batch, _spec(top), "mean")
    rng = np.random.default_rng(cfg.seed)
    others = [(la, h) for la in range(model.dims.n_layers) for h in range(model.dims.n_heads)
              if (la, h) not in top]  # fmt: skip
    controls, per_prompt = [], []
    for _ in range(cfg.control_seeds):
        picked = [others[i] for i in sorted(rng.choice(len(others), len(top), replace=False))]
        control = ablation_effect(model, batch, _spec(picked), "mean")
        controls.append({"heads": _spec(picked), "change": control.change})
        per_prompt.append(control.per_prompt_change.numpy())
    out = {"heads": _spec(top), "before": effect.before, "after": effect.after,
           "change": effect.change, "controls": controls,
           "control_mean_change": float(np.mean([c["change"] for c in controls])),
           "change_ci": None, "p_vs_controls": None}  # fmt: skip
    if len(batch) > 1 and controls:
        out["change_ci"] = effect.stats(cfg.seed)["change_ci"]
        out["p_vs_controls"] = signflip_pvalues(
            effect.per_prompt_change.numpy() - np.mean(per_prompt, 0), seed=cfg.seed
        )
    return out


def _figure(record: dict[str, Any], total: int) -> Any:
    from mechscope.viz.circuit import faithfulness_figure

    fig = faithfulness_figure(
        [(p["n_edges"], p["faithfulness"]) for p in record["curve"]], total,
        chosen=record["n_edges"], chosen_value=record["faithfulness"], method="EAP-IG",
    )  # fmt: skip
    ax = fig.axes[0]
    controls = record["random_faithfulness"]
    ax.plot([record["n_edges"]] * len(controls), controls, marker="x", ls="", color="#cf222e",
            ms=9, label=f"random circuits of {record['n_edges']} edges (control)")  # fmt: skip
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.12, 1.0), frameon=False)
    return fig


def task_validation(model: HookedModel, actx: AuditContext, name: str, batch: Any) -> None:
    """Faithfulness against random circuits and head ablation against random heads, one task."""
    cfg = actx.config
    found = actx.data["tasks"][name]
    circuit = found["circuit"]
    n_edges, total = int(circuit["n_edges"]), int(circuit["total_edges"])
    record: dict[str, Any] = {
        "task": name,
        "clean_logit_diff": found["clean_logit_diff"],
        "corrupt_logit_diff": found["corrupt_logit_diff"],
        "n_edges": n_edges,
        "total_edges": total,
        "faithfulness": circuit["faithfulness"],
        "curve": found["curve"],
    }
    with torch.enable_grad():  # the evaluator's runs are plain forwards; no state leaks out
        record["random_faithfulness"] = random_circuit_faithfulness(
            model, batch, n_edges, cfg.control_seeds, cfg.seed
        )
    record["ablation"] = _ablations(model, batch, top_heads(found["dla_heads"], cfg.ablate_heads),
                                    cfg)  # fmt: skip
    folder = actx.folder("validation")
    fig = _figure(record, total)
    png = save_png(fig, folder / f"{slug(name)}.png")
    link = actx.artefact(folder / f"{slug(name)}.json", record)
    actx.data.setdefault("validation", {})[name] = record
    actx.parts.setdefault("validation", {})[name] = render(
        "audit/validation.html.j2", task=name, r=record, figure=figure_uri(fig),
        png=actx.link(png), link=link,
    )  # fmt: skip
