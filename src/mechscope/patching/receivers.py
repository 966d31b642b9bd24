"""Path patching's endpoints: receiver inputs (parsed from ``"L9H6.q"``-style specs) and senders.

A receiver is a head's query/key/value input, an MLP's input, a layer's whole residual stream or
the logits; a sender is a head or an MLP (node specs of :mod:`mechscope.ablation.nodes`) that
comes strictly before every receiver. Used by :mod:`mechscope.patching.path`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mechscope.ablation.nodes import Node, expand
from mechscope.errors import MechscopeError
from mechscope.families import Dims

ReceiverKind = Literal["q", "k", "v", "mlp", "resid_pre", "logits"]
RECEIVER_GRAMMAR = "LxHy.q / .k / .v (a head's input), MLPx (an MLP's input), Lx.resid_pre, logits"
_RECEIVER = re.compile(
    r"^(?:L(\d+)H(\d+)\.([QKV])|MLP(\d+)(?:\.IN)?|L(\d+)\.RESID(?:_PRE)?|LOGITS)$"
)


@dataclass(frozen=True)
class Receiver:
    """A receiver input: ``kind`` q/k/v (of query head ``head``), mlp, resid_pre or logits."""

    kind: ReceiverKind
    layer: int | None = None
    head: int | None = None

    def __str__(self) -> str:
        if self.kind in ("q", "k", "v"):
            return f"L{self.layer}H{self.head}.{self.kind}"
        if self.kind == "logits":
            return "logits"
        return f"MLP{self.layer}" if self.kind == "mlp" else f"L{self.layer}.resid_pre"


def parse_receiver(spec: str | tuple[str, str] | Receiver) -> Receiver:
    """``"L9H6.q"``, ``("L9H6", "k")``, ``"MLP9"``, ``"L9.resid_pre"`` or ``"logits"``."""
    if isinstance(spec, Receiver):
        return spec
    text = ".".join(spec) if isinstance(spec, tuple) else spec
    m = _RECEIVER.match(text.strip().upper())
    if not m:
        raise MechscopeError(f"bad receiver {text!r}; grammar: {RECEIVER_GRAMMAR}")
    layer, head, qkv, mlp, resid = m.groups()
    if qkv:
        return Receiver(qkv.lower(), int(layer), int(head))  # type: ignore[arg-type]
    if mlp is not None:
        return Receiver("mlp", int(mlp))
    return Receiver("resid_pre", int(resid)) if resid is not None else Receiver("logits")


def parse_receivers(spec: Any, dims: Dims) -> tuple[Receiver, ...]:
    out = tuple(map(parse_receiver, spec if isinstance(spec, list) else [spec]))
    if not out:
        raise MechscopeError("give at least one receiver (e.g. 'logits' or 'L9H6.q')")
    for r in out:
        if r.layer is not None and r.layer >= dims.n_layers:
            raise MechscopeError(f"receiver {r}: the model has layers 0..{dims.n_layers - 1}")
        if r.head is not None and r.head >= dims.n_heads:
            raise MechscopeError(f"receiver {r}: the model has heads 0..{dims.n_heads - 1}")
    return out


def last_sender_layer(r: Receiver, dims: Dims, kind: str) -> int:
    """The last layer whose ``kind`` (head/mlp) may send to ``r`` (exclusive bound)."""
    if r.layer is None:
        return dims.n_layers
    same_layer = r.kind == "mlp" and kind == "head" and not dims.parallel
    return r.layer + 1 if same_layer else r.layer


def parse_senders(spec: Any, receivers: Sequence[Receiver], dims: Dims) -> tuple[Node, ...]:
    nodes = expand(spec, dims)
    for node in nodes:
        if node.kind == "neuron":
            raise MechscopeError(f"sender {node}: path patching sends from heads and MLPs only")
        for r in receivers:
            if node.layer >= last_sender_layer(r, dims, node.kind):
                raise MechscopeError(f"sender {node} does not come before receiver {r}")
    return nodes
