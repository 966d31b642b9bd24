"""Recovery of a Tracr-compiled circuit by the circuit methods (a planted ground truth).

A Tracr model (:mod:`mechscope.toys.tracr`) is a circuit by construction: each component reads
and writes named residual directions, and every other direction it touches is exactly zero. On
the EAP graph (:class:`Graph`) that gives two sharp edge sets:

- **compiled**: writer ``u`` reaches port ``p`` and some direction ``u`` writes (non-zero column
  of its output matrix; for the input, of the token or position embedding) is one that
  ``p`` reads (non-zero row of W_Q / W_K / W_V of that head, W_in of that MLP, or the
  unembedding). No other edge can carry anything, whatever the input.
- **exercised** by a task: a compiled edge whose writer's corrupted-minus-clean output has a
  non-zero component (above ``tol``) along the directions the port reads, at some prompt and
  position. (In Tracr every component lies on a path to the output, so these edges lead to the
  logits.) Edges the corruption cannot change (a head reading only positions, which clean and
  corrupted share) score exactly 0 under every patching method and are left out.

:func:`recovery` scores an edge circuit against them: edge precision against the compiled set
(an edge outside it is wrong), recall against the exercised set, and the same for the component
nodes (heads and MLPs); :func:`node_recovery` does the nodes of a node method.
:func:`exact_edge_scores` is exact edge patching (one patched forward per edge, the intervention
that EAP approximates to first order), :func:`exact_node_scores` exact patching of one writer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from mechscope.circuits.circuit import Circuit
from mechscope.circuits.faithfulness import Evaluator
from mechscope.circuits.graph import Graph
from mechscope.circuits.nodes import run_nodes
from mechscope.stats import auroc
from mechscope.tasks.metrics import Metric, logit_diff
from mechscope.toys.tracr import TracrModel

Tensor = torch.Tensor


def _nonzero_cols(*arrays: np.ndarray) -> np.ndarray:
    """[d] bool: directions with a non-zero entry in any array's last axis."""
    return np.any([np.abs(a.reshape(-1, a.shape[-1])).sum(0) > 0 for a in arrays], axis=0)


def write_read_dirs(t: TracrModel, graph: Graph) -> tuple[np.ndarray, np.ndarray]:
    """([node d] writes, [port d] reads) over Tracr's residual directions (unpadded)."""
    w, ks, cfg = t.weights, t.meta["config"]["key_size"], t.meta["config"]
    d = w["token_embed/embeddings"].shape[1]
    writes = np.zeros((len(graph.nodes), d), bool)
    reads = np.zeros((len(graph.ports), d), bool)
    writes[0] = _nonzero_cols(w["token_embed/embeddings"], w["pos_embed/embeddings"])
    for layer in range(cfg["num_layers"]):
        pre = f"transformer/layer_{layer}"
        wo = w[f"{pre}/attn/linear/w"]
        for h in range(graph.n_heads):
            sl = slice(h * ks, (h + 1) * ks)
            writes[graph.node_index(layer, h)] = _nonzero_cols(wo[sl])
            for kind, part in (("q", "query"), ("k", "key"), ("v", "value")):
                reads[graph.port_index(layer, kind, h)] = _nonzero_cols(
                    w[f"{pre}/attn/{part}/w"][:, sl].T
                )
        # the output bias is the same in every run: only W_out carries a difference
        writes[graph.node_index(layer)] = _nonzero_cols(w[f"{pre}/mlp/linear_2/w"])
        reads[graph.port_index(layer, "mlp")] = _nonzero_cols(w[f"{pre}/mlp/linear_1/w"].T)
    reads[graph.port_index(-1, "logits")] = _nonzero_cols(w["unembed"].T)
    return writes, reads


def compiled_edges(t: TracrModel, graph: Graph) -> Tensor:
    """[node port] bool: the edges that Tracr's weights connect (see the module docstring)."""
    writes, reads = write_read_dirs(t, graph)
    overlap = torch.from_numpy((writes.astype(int) @ reads.T.astype(int)) > 0)
    return overlap & graph.edge_mask


def _graph_name(component: str) -> str:
    """Tracr layout name (``L1H0``, ``MLP2``) -> graph node name (``a1.h0``, ``m2``)."""
    if component.startswith("MLP"):
        return f"m{component[3:]}"
    layer, head = component[1:].split("H")
    return f"a{layer}.h{head}"


def layout_edges(t: TracrModel, graph: Graph) -> Tensor:
    """[node port] bool: the edges of Tracr's layout (each operation's inputs into its ports).

    An operation's writer is its MLP when it has one (a selector width's head feeds its MLP),
    else its head; ``tokens`` and ``indices`` are the input. These are the compiled edges less
    those from the input that carry only Tracr's constant ``one`` direction and the BOS token.
    """
    node = {name: i for i, name in enumerate(graph.nodes)}
    port = {name: j for j, name in enumerate(graph.ports)}
    writer = {"tokens": "input", "indices": "input"}
    parts = {}
    for op in t.meta["layout"]:
        names = [_graph_name(c) for c in op["components"]]
        head = next((n for n in names if n.startswith("a")), None)
        mlp = next((n for n in names if n.startswith("m")), None)
        writer[op["op"]] = mlp or head
        parts[op["op"]] = (head, mlp)
    mask = torch.zeros(graph.edge_mask.shape, dtype=torch.bool)
    for op in t.meta["layout"]:
        head, mlp = parts[op["op"]]
        if head and mlp:
            mask[node[head], port[mlp]] = True
        for role, sources in op["reads"].items():
            dst = port[mlp] if role == "in" else port[f"{head}<{role}>"]
            for src in sources:
                mask[node[writer[src]], dst] = True
    mask[node[writer[t.meta["output"]]], port["logits"]] = True
    return mask


def exercised_edges(t: TracrModel, graph: Graph, tol: float = 1e-6) -> Tensor:
    """[node port] bool: compiled edges along which the task's corruption changes the input."""
    model, batch = t.model, t.batch
    _, clean = run_nodes(model, batch.clean_tokens, batch.clean_mask)
    _, corrupt = run_nodes(model, batch.corrupt_tokens, batch.clean_mask)
    _, reads = write_read_dirs(t, graph)
    d = reads.shape[1]
    delta = (corrupt - clean)[..., :d].abs().amax(dim=(0, 1))  # [node d]
    changed = (delta[:, None, :] * torch.from_numpy(reads)[None]).amax(-1) > tol  # [node port]
    return compiled_edges(t, graph) & changed


def components(graph: Graph, mask: Tensor) -> set[str]:
    """Heads and MLPs touched by the edges of ``mask`` (the input and logits are not counted)."""
    names = {graph.nodes[i] for i in mask.any(1).nonzero().flatten().tolist()}
    for j in mask.any(0).nonzero().flatten().tolist():
        names.update(graph.port_nodes(graph.ports[j]))
    return names - {"input", "logits"}


def _pr(chosen: set[Any], right: set[Any], wanted: set[Any]) -> tuple[float, float]:
    precision = len(chosen & right) / len(chosen) if chosen else float("nan")
    recall = len(chosen & wanted) / len(wanted) if wanted else float("nan")
    return precision, recall


def recovery(circuit: Circuit, compiled: Tensor, exercised: Tensor) -> dict[str, Any]:
    """Edge and node precision (against compiled) and recall (against exercised) of a circuit."""
    g = circuit.graph
    edges = set(map(tuple, circuit.mask.nonzero().tolist()))
    right = set(map(tuple, compiled.nonzero().tolist()))
    wanted = set(map(tuple, exercised.nonzero().tolist()))
    edge_p, edge_r = _pr(edges, right, wanted)
    nodes = components(g, circuit.mask)
    node_p, node_r = _pr(nodes, components(g, compiled), components(g, exercised))
    return {
        "n_edges": len(edges),
        "edge_precision": edge_p,
        "edge_recall": edge_r,
        "nodes": sorted(nodes),
        "node_precision": node_p,
        "node_recall": node_r,
    }


def separation(scored: Circuit, compiled: Tensor, exercised: Tensor) -> float:
    """AUROC of |score| (:func:`mechscope.stats.auroc`, ties one half): exercised edges against
    edges outside the compiled circuit (1 = sharp)."""
    a = scored.scores.abs()[exercised].double()
    b = scored.scores.abs()[scored.graph.edge_mask & ~compiled].double()
    if not len(a) or not len(b):
        return float("nan")
    return auroc(a.detach().numpy(), b.detach().numpy())


def exact_edge_scores(
    model: Any, batch: Any, metric: Metric = logit_diff, graph: Graph | None = None
) -> Circuit:
    """Exact edge patching: the metric change when one edge alone reads its corrupted writer."""
    ev = Evaluator(model, batch, metric, graph)
    g = ev.graph
    full = g.edge_mask
    scores = torch.zeros(full.shape)
    for i, j in full.nonzero().tolist():
        trial = full.clone()
        trial[i, j] = False
        scores[i, j] = ev.value(trial) - ev.clean_value
    meta = {"clean_metric": ev.clean_value, "corrupt_metric": ev.corrupt_value}
    return Circuit(g, scores, full, method="exact", meta=meta)


def exact_node_scores(
    model: Any, batch: Any, metric: Metric = logit_diff, graph: Graph | None = None
) -> Circuit:
    """Exact node patching: the metric change when one writer's output is corrupted for every
    reader (all its outgoing edges patched); ``meta["node_scores"]`` as node attribution."""
    ev = Evaluator(model, batch, metric, graph)
    g = ev.graph
    full = g.edge_mask
    node = torch.zeros(len(g.nodes), dtype=torch.float64)
    for i in range(len(g.nodes)):
        trial = full.clone()
        trial[i] = False
        node[i] = ev.value(trial) - ev.clean_value
    edges = node[:, None].expand(-1, len(g.ports)).masked_fill(~full, 0.0).float()
    meta = {"node_scores": node.tolist(), "level": "node", "clean_metric": ev.clean_value}
    return Circuit(g, edges.contiguous(), full, method="exact-node", meta=meta)


def top_nonzero(scored: Circuit, n: int, rel_tol: float = 1e-6) -> Circuit:
    """The top ``n`` edges by |score|, without those scored (numerically) zero.

    In a compiled model many edges score exactly 0 under a gradient method (a step-function MLP
    has no gradient); ``top_n`` would break those ties by index and call it a choice.
    """
    top = scored.top_n(n)
    floor = rel_tol * float(scored.scores.detach().abs().max())
    return replace(top, mask=top.mask & (scored.scores.abs() > floor))


def node_recovery(
    scored: Circuit, n: int, compiled: Tensor, exercised: Tensor, rel_tol: float = 1e-6
) -> dict[str, Any]:
    """Node precision and recall of a node method's top ``n`` nodes by |score| (input included
    in the count, not in the scores), leaving out nodes scored zero.

    Node methods choose nodes, not edges: MIB's selection keeps every edge out of a chosen node
    and then prunes, which empties the circuit when the chosen nodes have no chosen writer.
    """
    g = scored.graph
    values = torch.tensor(scored.meta["node_scores"]).abs()
    keep = values > rel_tol * float(values.max())
    order = [i for i in values.argsort(descending=True).tolist() if keep[i]][:n]
    chosen = {g.nodes[i] for i in order} - {"input"}
    precision, recall = _pr(chosen, components(g, compiled), components(g, exercised))
    return {"nodes": sorted(chosen), "node_precision": precision, "node_recall": recall}
