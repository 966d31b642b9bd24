"""Node sets: which attention heads, MLPs and neurons an ablation (or a circuit) names.

A node set is written as comma-separated items (case-insensitive, spaces ignored), as the CLI's
``--nodes SPEC`` takes it, e.g. ``"L5H3,L7H*,L9,MLP4,L3N120"``:

=========  ===========================================  ==========================================
item       meaning                                      ablated at
=========  ===========================================  ==========================================
``LxHy``   head y of layer x                            ``blocks.x.attn.hook_z``, head y
``LxH*``   every head of layer x                        ``blocks.x.attn.hook_z``, every head
``Lx``     layer x: every head *and* the MLP of layer   both of the above; the residual stream
           x (not the residual stream itself)           and norms are left alone
``MLPx``   the MLP of layer x                           ``blocks.x.hook_mlp_out``
``LxNy``   neuron y of layer x's MLP                    ``blocks.x.mlp.hook_post``, neuron y
=========  ===========================================  ==========================================

A head is ablated at ``hook_z``, so what is removed is exactly its contribution through W_O (the
output projection's bias, shared by all heads, stays). :func:`expand` turns ``LxH*`` and ``Lx``
into single heads and MLPs and checks every index against the model's dimensions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from mechscope.errors import MechscopeError
from mechscope.families import Dims

NodeKind = Literal["head", "mlp", "neuron", "layer"]
KINDS: tuple[str, ...] = ("layer", "head", "mlp", "neuron")  # sort order within a layer
GRAMMAR = (
    "comma-separated items LxHy (head y of layer x), LxH* (every head of layer x), "
    "Lx (heads and MLP of layer x), MLPx (MLP of layer x), LxNy (neuron y of MLP x)"
)
_ITEM = re.compile(r"^(?:L(\d+)(?:H(\d+|\*)|N(\d+))?|MLP(\d+))$")


@dataclass(frozen=True)
class Node:
    """One node: ``kind`` ``head`` / ``mlp`` / ``neuron`` / ``layer``, its ``layer``, ``index``.

    ``index`` is the head (kind ``head``; None means every head of the layer) or the neuron
    (kind ``neuron``); it is None for ``mlp`` and ``layer``.
    """

    kind: NodeKind
    layer: int
    index: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MechscopeError(f"node kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.layer < 0 or (self.index is not None and self.index < 0):
            raise MechscopeError(f"node {self} has a negative layer or index")
        if self.kind == "neuron" and self.index is None:
            raise MechscopeError(f"a neuron node needs an index (layer {self.layer})")
        if self.kind in ("mlp", "layer") and self.index is not None:
            raise MechscopeError(f"a {self.kind} node takes no index, got {self.index}")

    def __str__(self) -> str:
        if self.kind == "head":
            return f"L{self.layer}H{'*' if self.index is None else self.index}"
        if self.kind == "neuron":
            return f"L{self.layer}N{self.index}"
        return f"MLP{self.layer}" if self.kind == "mlp" else f"L{self.layer}"

    def sort_key(self) -> tuple[int, int, int]:
        return (self.layer, KINDS.index(self.kind), -1 if self.index is None else self.index)


def parse_node(item: str) -> Node:
    """One item of a node spec (``"L5H3"``, ``"L7H*"``, ``"L9"``, ``"MLP4"``, ``"L3N120"``)."""
    m = _ITEM.match(item.strip().upper())
    if not m:
        raise MechscopeError(f"bad node {item.strip()!r} in node spec; grammar: {GRAMMAR}")
    layer, head, neuron, mlp = m.groups()
    if mlp is not None:
        return Node("mlp", int(mlp))
    if head is not None:
        return Node("head", int(layer), None if head == "*" else int(head))
    if neuron is not None:
        return Node("neuron", int(layer), int(neuron))
    return Node("layer", int(layer))


def parse_nodes(spec: str | Node | Iterable[str | Node]) -> tuple[Node, ...]:
    """A node set from a spec string or a list of items/nodes; duplicates dropped, order kept.

    The empty string is the empty set.
    """
    if isinstance(spec, Node):
        return (spec,)
    items = spec.replace(" ", "").split(",") if isinstance(spec, str) else spec
    nodes: list[Node] = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            if isinstance(spec, str) and spec.strip():
                raise MechscopeError(f"empty item in node spec {spec!r}; grammar: {GRAMMAR}")
            continue
        node = item if isinstance(item, Node) else parse_node(item)
        if node not in nodes:
            nodes.append(node)
    return tuple(nodes)


def format_nodes(nodes: Iterable[Node]) -> str:
    """The spec string of a node set (``parse_nodes(format_nodes(n)) == n``)."""
    return ",".join(str(n) for n in nodes)


def _check(node: Node, dims: Dims) -> None:
    if node.layer >= dims.n_layers:
        raise MechscopeError(
            f"node {node} is out of range: the model has layers 0..{dims.n_layers - 1}"
        )
    if node.kind == "head" and node.index is not None and node.index >= dims.n_heads:
        raise MechscopeError(
            f"node {node} is out of range: the model has heads 0..{dims.n_heads - 1}"
        )
    if node.kind == "neuron" and node.index is not None and node.index >= dims.d_mlp:
        raise MechscopeError(
            f"node {node} is out of range: the MLP has neurons 0..{dims.d_mlp - 1}"
        )


def expand(nodes: str | Iterable[str | Node], dims: Dims) -> tuple[Node, ...]:
    """Single heads, MLPs and neurons only, range-checked, deduplicated, in forward order.

    ``LxH*`` becomes every head of layer x and ``Lx`` every head plus the MLP of layer x.
    """
    out: set[Node] = set()
    for node in parse_nodes(nodes):
        _check(node, dims)
        if node.kind == "layer" or (node.kind == "head" and node.index is None):
            out.update(Node("head", node.layer, h) for h in range(dims.n_heads))
            if node.kind == "layer":
                out.add(Node("mlp", node.layer))
        else:
            out.add(node)
    return tuple(sorted(out, key=Node.sort_key))


def all_components(dims: Dims) -> tuple[Node, ...]:
    """Every head and every MLP of the model, in forward order."""
    return expand([Node("layer", layer) for layer in range(dims.n_layers)], dims)


def complement(nodes: str | Iterable[str | Node], dims: Dims) -> tuple[Node, ...]:
    """Every head and MLP not in ``nodes``: what "keep only this circuit" ablates.

    An MLP of which only some neurons are kept is not ablated whole: its other neurons are.
    """
    kept = expand(nodes, dims)
    out: list[Node] = []
    for node in all_components(dims):
        if node in kept:
            continue
        if node.kind == "mlp":
            neurons = {n.index for n in kept if n.kind == "neuron" and n.layer == node.layer}
            if neurons:
                out += [
                    Node("neuron", node.layer, i) for i in range(dims.d_mlp) if i not in neurons
                ]
                continue
        out.append(node)
    return tuple(out)
