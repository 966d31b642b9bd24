"""The attribution graph as a result: adjacency, nodes, scores and the circuit-tracer JSON.

``Graph.to_dict()`` is the graph format circuit-tracer writes and Neuronpedia reads
(``metadata``, ``qParams``, ``nodes``, ``links``), pruned to the kept nodes and edges, with node
ids ``{layer}_{feature}_{pos}`` (features), ``{layer}_-1_{pos}`` (errors), ``E_{token}_{pos}``
(embeddings) and ``{n_layers + 1}_{token}_{pos}`` (logits); mechscope's own figures (scores,
sizes, the settings) ride along under ``metadata.info``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.graphs.prune import Pruned, prune, scores

__all__ = ["Graph", "node_id"]


def _cantor(x: int, y: int) -> int:
    return (x + y) * (x + y + 1) // 2 + y


@dataclass
class Graph:
    """Nodes ``[features (selected), errors (layer-major), tokens, logits]``; ``adjacency[t, s]``
    is the direct effect of source ``s`` on target ``t``. Only features and logits have inputs:
    ``rows`` holds their rows (features, then logits); ``adjacency`` builds the square matrix."""

    prompt: str
    tokens: list[int]
    str_tokens: list[str]
    n_layers: int
    features: Tensor  # [n_feat 3] layer, pos, feature
    activations: Tensor  # [n_feat]
    pre_activations: Tensor  # [n_feat]: the value of each feature node as a target
    rows: Tensor  # [n_feat + n_logits, n]: the non-zero rows of the adjacency matrix
    logit_tokens: list[int]
    logit_strs: list[str]
    logit_probs: Tensor  # [n_logits]
    n_active: int  # active features before selection
    model_name: str = ""
    scan: str = ""

    @classmethod
    def assemble(
        cls,
        model: Any,
        snap: Any,
        feats: Any,
        order: Tensor,
        feat_rows: Tensor,
        logit_ids: Tensor,
        logit_p: Tensor,
        logit_adj: Tensor,
        prompt: str = "",
    ) -> Graph:
        n_all = feats.index.shape[0]
        rank = order.argsort()
        sel = order[rank]  # selected features in (layer, pos, feature) order
        rows = torch.cat([feat_rows[rank], logit_adj])
        n_sel, n_rest = sel.shape[0], rows.shape[1] - n_all
        n = n_sel + n_rest + logit_ids.shape[0]
        adj = torch.zeros(rows.shape[0], n, dtype=torch.float32)
        adj[:, :n_sel] = rows[:, sel].float()
        adj[:, n_sel : n_sel + n_rest] = rows[:, n_all:].float()
        tokens = snap.tokens.tolist()
        return cls(
            prompt=prompt,
            tokens=tokens,
            str_tokens=_strs(model, tokens),
            n_layers=model.dims.n_layers,
            features=feats.index[sel],
            activations=feats.values[sel].float(),
            pre_activations=feats.pre[sel].float(),
            rows=adj,
            logit_tokens=logit_ids.tolist(),
            logit_strs=_strs(model, logit_ids.tolist()),
            logit_probs=logit_p.float(),
            n_active=n_all,
            model_name=str(model.provenance.get("name", "")) if model.provenance else "",
        )

    # -- layout ------------------------------------------------------------------------------
    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_nodes(self) -> int:
        return int(self.rows.shape[1])

    @property
    def row_nodes(self) -> Tensor:
        """The node of each row of ``rows``: the features, then the logits."""
        n_logits = len(self.logit_tokens)
        return torch.cat(
            [torch.arange(self.n_features), torch.arange(self.n_nodes - n_logits, self.n_nodes)]
        )

    @property
    def adjacency(self) -> Tensor:
        """The square matrix ``[n n]`` (zero rows for errors and tokens; for small graphs)."""
        adj = torch.zeros(self.n_nodes, self.n_nodes, dtype=self.rows.dtype)
        adj[self.row_nodes] = self.rows
        return adj

    def edge(self, target: int, source: int) -> float:
        """``adjacency[target, source]`` without building the matrix."""
        hit = (self.row_nodes == target).nonzero()
        return float(self.rows[int(hit[0, 0]), source]) if len(hit) else 0.0

    @property
    def n_errors(self) -> int:
        return self.n_layers * self.n_pos

    def error_index(self, layer: int, pos: int) -> int:
        return self.n_features + layer * self.n_pos + pos

    def token_index(self, pos: int) -> int:
        return self.n_features + self.n_errors + pos

    def logit_index(self, i: int) -> int:
        return self.n_features + self.n_errors + self.n_pos + i

    def feature_index(self, layer: int, pos: int, feature: int) -> int | None:
        hit = (self.features == torch.tensor([layer, pos, feature])).all(1).nonzero()
        return int(hit[0, 0]) if len(hit) else None

    def node_ids(self) -> list[str]:
        return [node_id(self, i) for i in range(self.n_nodes)]

    # -- analysis ----------------------------------------------------------------------------
    def prune(self, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> Pruned:
        return prune(
            self.rows, self.row_nodes, self.logit_probs, self.n_features, self.n_pos,
            node_threshold, edge_threshold,
        )  # fmt: skip

    def scores(self) -> tuple[float, float]:
        """(replacement score, completeness score)."""
        return scores(
            self.rows, self.row_nodes, self.logit_probs, self.n_features, self.n_errors, self.n_pos
        )

    # -- interchange -------------------------------------------------------------------------
    def to_dict(
        self,
        node_threshold: float = 0.8,
        edge_threshold: float = 0.98,
        slug: str = "graph",
        pruned: Pruned | None = None,
    ) -> dict[str, Any]:
        """circuit-tracer's graph JSON of the pruned graph."""
        p = pruned or self.prune(node_threshold, edge_threshold)
        ids = self.node_ids()
        keep = p.node_mask.nonzero().flatten().tolist()
        row, src = p.edge_mask.nonzero(as_tuple=True)
        kept = set(keep)
        targets = self.row_nodes[row].tolist()
        weights = self.rows[row, src].tolist()
        links = [
            {"source": ids[s], "target": ids[t], "weight": w}
            for t, s, w in zip(targets, src.tolist(), weights)
            if s in kept and t in kept
        ]
        used = {x["source"] for x in links} | {x["target"] for x in links}
        nodes = [self._node(i, ids[i], float(p.cumulative[i]), float(p.influence[i])) for i in keep]
        nodes = [
            x for x in nodes if x["node_id"] in used or x["feature_type"] in ("embedding", "logit")
        ]
        replacement, completeness = self.scores()
        return {
            "metadata": {
                "slug": slug,
                "scan": self.scan or self.model_name,
                "transcoder_list": [],
                "prompt_tokens": self.str_tokens,
                "prompt": self.prompt,
                "node_threshold": node_threshold,
                "schema_version": 1,
                "info": {
                    "generator": "mechscope",
                    "model": self.model_name,
                    "edge_threshold": edge_threshold,
                    "replacement_score": replacement,
                    "completeness_score": completeness,
                    "n_active_features": self.n_active,
                    "n_feature_nodes": self.n_features,
                    "n_nodes_kept": len(nodes),
                    "n_links_kept": len(links),
                },
            },
            "qParams": {
                "pinnedIds": [],
                "supernodes": [],
                "linkType": "both",
                "clickedId": "",
                "sg_pos": "",
            },
            "nodes": nodes,
            "links": links,
        }

    def _node(self, i: int, nid: str, cumulative: float, own: float) -> dict[str, Any]:
        base = {"node_id": nid, "jsNodeId": nid, "influence": cumulative, "clerp": ""}
        base["node_influence"] = own  # mechscope: the node's own influence on the logits
        base.update(token_prob=0.0, is_target_logit=False, run_idx=0, reverse_ctx_idx=0)
        if i < self.n_features:
            layer, pos, feat = (int(v) for v in self.features[i])
            return {**base, "feature": _cantor(layer, feat), "layer": str(layer), "ctx_idx": pos,
                    "feature_type": "cross layer transcoder", "jsNodeId": f"{layer}_{feat}-0",
                    "activation": float(self.activations[i]), "feature_index": feat}  # fmt: skip
        if i < self.n_features + self.n_errors:
            layer, pos = divmod(i - self.n_features, self.n_pos)
            return {**base, "feature": -1, "layer": str(layer), "ctx_idx": pos,
                    "feature_type": "mlp reconstruction error", "jsNodeId": f"{layer}_-1-{pos}",
                    "activation": None}  # fmt: skip
        if i < self.logit_index(0):
            pos = i - self.n_features - self.n_errors
            return {**base, "feature": pos, "layer": "E", "ctx_idx": pos,
                    "feature_type": "embedding", "jsNodeId": f"E_{self.tokens[pos]}-{pos}",
                    "clerp": self.str_tokens[pos], "activation": None}  # fmt: skip
        j = i - self.logit_index(0)
        prob = float(self.logit_probs[j])
        tok = self.logit_tokens[j]
        return {**base, "feature": tok, "layer": str(self.n_layers + 1), "ctx_idx": self.n_pos - 1,
                "feature_type": "logit", "token_prob": prob, "is_target_logit": j == 0,
                "jsNodeId": f"L_{tok}-{self.n_pos - 1}", "activation": None,
                "clerp": f'Output "{self.logit_strs[j]}" (p={prob:.3f})'}  # fmt: skip


def node_id(g: Graph, i: int) -> str:
    """circuit-tracer's node id of node ``i``."""
    if i < g.n_features:
        layer, pos, feat = (int(v) for v in g.features[i])
        return f"{layer}_{feat}_{pos}"
    if i < g.n_features + g.n_errors:
        layer, pos = divmod(i - g.n_features, g.n_pos)
        return f"{layer}_-1_{pos}"
    if i < g.logit_index(0):
        pos = i - g.n_features - g.n_errors
        return f"E_{g.tokens[pos]}_{pos}"
    j = i - g.logit_index(0)
    return f"{g.n_layers + 1}_{g.logit_tokens[j]}_{g.n_pos - 1}"


def _strs(model: Any, ids: list[int]) -> list[str]:
    if getattr(model, "tokenizer", None) is None:
        return [str(i) for i in ids]
    return [model.tokenizer.decode([i]) for i in ids]
