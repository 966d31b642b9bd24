"""The computational graph of edge attribution patching (EAP; Syed et al. 2023, EAP-IG; Hanna et al.
2024, "Have Faith in Faithfulness"): writer nodes, reader ports, and the edges between them.

Writers (``nodes``), in forward order: ``input`` (the embeddings, ``blocks.0.hook_resid_pre``),
each attention head ``a{L}.h{H}`` (its write, ``attn.hook_result``) and each MLP ``m{L}``
(``hook_mlp_out``). Readers (``ports``): each head's query input ``a{L}.h{H}<q>``, each key/value
head's key and value inputs (``a{L}.h{H}<k>`` when every head has its own key/value head,
``a{L}.kv{G}<k>`` under grouped-query attention, where one key/value head serves ``n_heads /
n_kv_heads`` query heads), each MLP's input ``m{L}`` and the unembedding's ``logits``. With
``ungroup_kv`` every query head has its own k and v ports even under grouped-query attention: the
edge into head h's key port then changes the keys that head h sees and no other head's.

Because the residual stream is a sum, writer ``u`` reaches reader ``p`` exactly when ``u`` writes
before ``p`` reads: heads of layer L read the writers of layers < L; an MLP also reads its own
layer's heads unless the block is parallel (GPT-NeoX), where attention and MLP read the same
residual; the logits read every writer. Writers are stored in forward order, so the writers a
port reads are a prefix of ``nodes``: ``n_up[p]`` is that prefix's length and the edge set is
``arange(n_nodes)[:, None] < n_up[None, :]``.

Edge count for ``n_layers`` = L, ``n_heads`` = H and ``n_kv`` key/value ports per kind and layer,
with U(l) = 1 + l (H + 1) writers before layer l:
``sum_l (H + 2 n_kv) U(l) + sum_l (U(l) + H [not parallel]) + U(L)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mechscope.errors import MechscopeError
from mechscope.families import Dims

Tensor = torch.Tensor


@dataclass(frozen=True)
class Graph:
    """Writers, readers and edges of one model's EAP graph (see the module docstring)."""

    n_layers: int
    n_heads: int
    n_kv: int  # key/value ports per kind and layer (n_kv_heads: what the model computes)
    parallel: bool  # attention and MLP read the same residual (GPT-NeoX)
    nodes: tuple[str, ...] = field(init=False, compare=False)
    ports: tuple[str, ...] = field(init=False, compare=False)
    n_up: Tensor = field(
        init=False, repr=False, compare=False
    )  # [port] writers read by each port (a prefix)

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv:
            raise MechscopeError(f"n_heads={self.n_heads} is not a multiple of n_kv={self.n_kv}")
        nodes, ports, n_up = ["input"], [], []
        kv = "h" if self.n_kv == self.n_heads else "kv"
        for layer in range(self.n_layers):
            before = len(nodes)
            heads = [f"a{layer}.h{h}" for h in range(self.n_heads)]
            ports += [f"{h}<q>" for h in heads]
            ports += [f"a{layer}.{kv}{g}<{c}>" for c in "kv" for g in range(self.n_kv)]
            n_up += [before] * (self.n_heads + 2 * self.n_kv)
            nodes += heads
            ports.append(f"m{layer}")
            n_up.append(before if self.parallel else len(nodes))
            nodes.append(f"m{layer}")
        ports.append("logits")
        n_up.append(len(nodes))
        object.__setattr__(self, "nodes", tuple(nodes))
        object.__setattr__(self, "ports", tuple(ports))
        object.__setattr__(self, "n_up", torch.tensor(n_up))

    @classmethod
    def from_dims(cls, dims: Dims, ungroup_kv: bool = False) -> Graph:
        """The model's graph; ``ungroup_kv`` gives every query head its own k and v ports (as
        TransformerLens's ``ungroup_grouped_query_attention``, which the reference counts use)."""
        n_kv = dims.n_heads if ungroup_kv else dims.n_kv_heads
        return cls(dims.n_layers, dims.n_heads, n_kv, dims.parallel)

    @property
    def ports_per_layer(self) -> int:
        """q ports, k ports, v ports, then the MLP port."""
        return self.n_heads + 2 * self.n_kv + 1

    @property
    def edge_mask(self) -> Tensor:
        """[node port] bool: which writer reaches which reader."""
        return torch.arange(len(self.nodes))[:, None] < self.n_up[None, :]

    @property
    def n_edges(self) -> int:
        return int(self.n_up.sum())

    def node_index(self, layer: int, head: int | None = None) -> int:
        """Index of head ``head`` of ``layer``, or of the layer's MLP when ``head`` is None."""
        base = 1 + layer * (self.n_heads + 1)
        return base + (self.n_heads if head is None else head)

    def port_index(self, layer: int, kind: str, head: int = 0) -> int:
        """Index of a port: kind "q" (head), "k"/"v" (key/value head), "mlp"; layer -1: logits."""
        if layer < 0:
            return len(self.ports) - 1
        offset = {"q": 0, "k": self.n_heads, "v": self.n_heads + self.n_kv}
        base = layer * self.ports_per_layer
        return base + (self.ports_per_layer - 1 if kind == "mlp" else offset[kind] + head)

    def port_nodes(self, port: str) -> tuple[str, ...]:
        """The writer nodes that a port feeds (several query heads for a grouped k/v port)."""
        name = port.split("<")[0]
        if ".kv" not in name:
            return (name,)
        layer, group = name[1:].split(".kv")
        per = self.n_heads // self.n_kv
        return tuple(f"a{layer}.h{int(group) * per + j}" for j in range(per))

    def edge_names(self, mask: Tensor | None = None) -> list[tuple[str, str]]:
        """(src, dst) of the edges in ``mask`` [node port] (default: every edge)."""
        mask = self.edge_mask if mask is None else mask & self.edge_mask
        return [(self.nodes[i], self.ports[j]) for i, j in mask.nonzero().tolist()]

    def check_mask(self, mask: Tensor) -> None:
        want = (len(self.nodes), len(self.ports))
        if tuple(mask.shape) != want:
            raise MechscopeError(f"edge mask has shape {tuple(mask.shape)}, expected {want}")


def edge_count(n_layers: int, n_heads: int, n_kv: int, parallel: bool = False) -> int:
    """The closed-form edge count of the module docstring (checked against :class:`Graph`)."""
    total = 0
    for layer in range(n_layers):
        before = 1 + layer * (n_heads + 1)
        total += (n_heads + 2 * n_kv) * before + before + (0 if parallel else n_heads)
    return total + 1 + n_layers * (n_heads + 1)
