"""Task importance of every weight group, from mechscope's circuit analyses.

1. Node scores (:func:`node_scores`): EAP-IG (or EAP) edge scores of the task
   (:func:`mechscope.circuits.attribute`), summed in absolute value per node: a head's outgoing
   edges (its write), each head's query port, each key/value head's key and value ports, each
   MLP's outgoing edges and its input port. An MLP's score is shared among its neurons in
   proportion to their attribution-patching estimates ``|sum (a_corrupt - a_clean) dm/da|`` of
   ``mlp.hook_post`` (one forward and backward for all layers; the same estimate as
   ``attribution_patch(..., "neuron", direction="noise")``), so a neuron's scores sum to its MLP's.
2. Slices (:func:`group_importance`): a head's score goes to its q rows (write + query port),
   its key/value head's k and v rows (the writes of every query head sharing them under GQA, plus
   the key or value port) and its o columns (write); a neuron's score goes to its gate and up rows
   and its down column. A group's importance is its rows' score (a row group) or the mean of its
   columns' scores (a column group); Linear weights the family file does not name get 0.
3. :func:`task_importance` normalises each task's group importance to mean 1 and sums the tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mechscope.circuits import attribute
from mechscope.circuits.circuit import Circuit
from mechscope.compress.groups import Layout, WeightInfo
from mechscope.models.hooked import HookedModel
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import Metric, logit_diff

Tensor = torch.Tensor


@dataclass(frozen=True)
class NodeScores:
    """Absolute node scores of one task; shapes ``[layer head]``, ``[layer kv]``, ``[layer]``,
    ``[layer d_mlp]`` (neurons: each MLP's score split among its neurons)."""

    head_out: Tensor
    head_q: Tensor
    kv_k: Tensor
    kv_v: Tensor
    mlp: Tensor
    neurons: Tensor

    def top_heads(self, n: int = 10) -> list[tuple[str, float]]:
        total = self.head_out + self.head_q
        flat = total.flatten()
        idx = flat.argsort(descending=True)[:n]
        h = total.shape[1]
        return [(f"a{int(i) // h}.h{int(i) % h}", float(flat[i])) for i in idx]


def neuron_attribution(model: HookedModel, batch: TaskBatch, metric: Metric) -> Tensor:
    """[layer d_mlp]: ``sum_{batch,pos} (a_corrupt - a_clean) * dmetric/da`` / batch at
    ``mlp.hook_post``, the gradient taken on the clean run (noising attribution patching)."""
    names = "blocks.*.mlp.hook_post"
    with torch.no_grad():
        _, corrupt = model.run_with_cache(
            batch.corrupt_tokens, names=names, attention_mask=batch.corrupt_mask
        )
    acts: dict[str, Tensor] = {}
    grads: dict[str, Tensor] = {}

    def keep(t: Tensor, hook: object) -> None:
        acts[hook.name] = t.detach()  # type: ignore[attr-defined]

    def keep_grad(g: Tensor, hook: object) -> None:
        grads[hook.name] = g.detach()  # type: ignore[attr-defined]

    with torch.enable_grad(), model.hooks(fwd=[(names, keep)], bwd=[(names, keep_grad)]):
        embeds: list[Tensor] = []

        def leaf(t: Tensor, hook: object) -> Tensor:
            embeds.append(t.detach().requires_grad_(True))
            return embeds[-1]

        with model.hooks(fwd=[("hook_embed", leaf)]):
            logits = model.forward(batch.clean_tokens, batch.clean_mask)
        torch.autograd.grad(metric(logits, batch).sum(), embeds[0])
    out = []
    for layer in range(model.dims.n_layers):
        name = f"blocks.{layer}.mlp.hook_post"
        delta = corrupt[name] - acts[name]
        out.append(torch.einsum("bpm,bpm->m", delta.float(), grads[name].float()) / len(batch))
    return torch.stack(out)


def from_circuit(circuit: Circuit, n_kv: int, neurons: Tensor) -> NodeScores:
    """Node scores from a scored circuit (every edge) and per-neuron attributions."""
    g = circuit.graph
    s = (circuit.scores * circuit.mask).abs()
    n_layers, n_heads = g.n_layers, g.n_heads
    head_out = torch.zeros(n_layers, n_heads)
    head_q = torch.zeros(n_layers, n_heads)
    kv_k = torch.zeros(n_layers, n_kv)
    kv_v = torch.zeros(n_layers, n_kv)
    mlp = torch.zeros(n_layers)
    per = g.n_kv // n_kv  # ports per model kv head (1 unless the graph ungroups GQA)
    for layer in range(n_layers):
        for h in range(n_heads):
            head_out[layer, h] = s[g.node_index(layer, h)].sum()
            head_q[layer, h] = s[:, g.port_index(layer, "q", h)].sum()
        for p in range(g.n_kv):
            kv_k[layer, p // per] += s[:, g.port_index(layer, "k", p)].sum()
            kv_v[layer, p // per] += s[:, g.port_index(layer, "v", p)].sum()
        mlp[layer] = s[g.node_index(layer)].sum() + s[:, g.port_index(layer, "mlp")].sum()
    share = neurons.abs()
    share = share / share.sum(dim=1, keepdim=True).clamp_min(1e-30)
    return NodeScores(head_out, head_q, kv_k, kv_v, mlp, share * mlp[:, None])


def node_scores(
    model: HookedModel,
    batch: TaskBatch,
    metric: Metric = logit_diff,
    method: str = "eap-ig",
    steps: int = 5,
) -> NodeScores:
    """EAP-IG (or EAP) node scores of a task, with the MLPs split among their neurons."""
    circuit = attribute(model, batch, metric, method=method, steps=steps)
    neurons = neuron_attribution(model, batch, metric)
    return from_circuit(circuit, model.dims.n_kv_heads, neurons)


def _row_and_col(
    info: WeightInfo, s: NodeScores, d_head: int
) -> tuple[Tensor | None, Tensor | None]:
    """(score per output row, score per input column) of one weight; None where it has none."""
    layer = info.layer
    rep = s.head_out.shape[1] // s.kv_k.shape[1]
    out = s.head_out[layer]
    group_out = out.view(-1, rep).sum(1)
    per_head = {
        "q": out + s.head_q[layer],
        "k": group_out + s.kv_k[layer],
        "v": group_out + s.kv_v[layer],
    }
    if info.kind in per_head:
        return per_head[info.kind].repeat_interleave(d_head), None
    if info.kind == "o":
        return None, out.repeat_interleave(d_head)
    if info.kind in ("gate", "up"):
        return s.neurons[layer], None
    if info.kind == "down":
        return None, s.neurons[layer]
    return None, None


def group_importance(layout: Layout, scores: NodeScores, d_head: int) -> Tensor:
    """[group] task importance of every group (see the module docstring)."""
    parts = []
    for info in layout.weights:
        row, col = _row_and_col(info, scores, d_head)
        per_row = info.groups_per_row
        if row is not None:
            part = row[:, None].expand(-1, per_row)
        elif col is not None:
            part = col.view(per_row, info.group_size).mean(1)[None].expand(info.out_features, -1)
        else:
            part = torch.zeros(info.out_features, per_row)
        parts.append(part.reshape(-1).float())
    return torch.cat(parts)


def task_importance(layout: Layout, tasks: list[NodeScores], d_head: int) -> Tensor:
    """[group] the sum over tasks of each task's group importance normalised to mean 1."""
    total = torch.zeros(layout.n_groups)
    for s in tasks:
        imp = group_importance(layout, s, d_head)
        total += imp / imp.mean().clamp_min(1e-30)
    return total
