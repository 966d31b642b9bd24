"""Check a graph by intervening on its features in the real model.

For a chosen feature node ``s`` (layer ``l``, position ``p``, activation ``a``), ablation sets
its activation to 0 and steering to ``scale * a``: the change ``delta * W_dec[s, m]`` is added to
the real model's MLP output at every layer ``m`` the feature writes to, at position ``p``, and the
model runs unfrozen (attention, norms and MLPs recompute). Measured: the change of every logit
node (logit minus mean logit) and of every downstream feature node's pre-activation. Predicted by
the graph: the same changes propagated linearly through the feature nodes (``d pre_t / d a_s =
A[t, s] / a_s``; an active feature passes its input change on), with errors and attention frozen.
Agreement is exact in the replacement model; in the real model it measures how local the graph
is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import MechscopeError
from mechscope.graphs.attribute import encode_prompt
from mechscope.graphs.freeze import frozen_forward, snapshot
from mechscope.graphs.graph import Graph, node_id
from mechscope.graphs.transcoders import TranscoderSet, in_site, out_site

__all__ = ["Check", "predict", "verify"]


@dataclass
class Check:
    """One intervention: predicted and measured changes of the logit and feature nodes."""

    node: str
    delta: float  # the change of the feature's activation
    targets: list[str] = field(default_factory=list)
    predicted: list[float] = field(default_factory=list)
    measured: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        p, m = torch.tensor(self.predicted), torch.tensor(self.measured)
        rel = float((p - m).norm() / m.norm().clamp_min(1e-12)) if len(m) else 0.0
        return {"node": self.node, "delta": self.delta, "targets": self.targets,
                "predicted": self.predicted, "measured": self.measured, "relative_error": rel}  # fmt: skip


def predict(g: Graph, source: int, delta: float) -> Tensor:
    """Predicted change of every node ``[n]`` when feature node ``source`` changes by ``delta``."""
    n_f = g.n_features
    rows = g.rows.double()  # features, then logits
    per_row = rows[:, :n_f] / g.activations.double().clamp_min(1e-30)[None]  # d target / d a_s
    change = torch.zeros(n_f, dtype=torch.float64)
    change[source] = delta
    for _ in range(n_f + 1):  # the graph is acyclic: this reaches a fixed point
        new = per_row[:n_f] @ change
        new[source] = delta
        if torch.allclose(new, change, rtol=0, atol=1e-12):
            break
        change = new
    out = torch.zeros(g.n_nodes, dtype=torch.float64)
    out[g.row_nodes] = per_row @ change
    out[:n_f] = torch.where(
        torch.arange(n_f) == source, torch.tensor(float(delta)).double(), out[:n_f]
    )
    return out


@torch.no_grad()
def _measure(model: Any, tcs: TranscoderSet, g: Graph, source: int, delta: float) -> Tensor:
    layer, pos, feat = (int(v) for v in g.features[source])
    fwd = []
    for m in range(layer, layer + tcs.W_dec[layer].shape[1]):
        vec = delta * tcs.W_dec[layer][feat, m - layer]

        def add(t: Tensor, hook: Any, vec: Tensor = vec) -> Tensor:
            t = t.clone()
            t[:, pos] += vec.to(t.dtype)
            return t

        fwd.append((out_site(m), add))
    tokens = torch.tensor(g.tokens)
    base, after = snapshot(model, tokens), _snapshot_with(model, tokens, fwd)
    out = torch.zeros(g.n_nodes, dtype=torch.float64)
    for i, (lay, p, f) in enumerate(g.features.tolist()):
        w = tcs.W_enc[lay][:, f].double()
        out[i] = float((after.mlp_in[lay, p].double() - base.mlp_in[lay, p].double()) @ w)
    for j, tok in enumerate(g.logit_tokens):
        d = after.unembed.double() - base.unembed.double()
        out[g.logit_index(j)] = float(d[tok] - d.mean())
    return out


@torch.no_grad()
def measure_frozen(model: Any, tcs: TranscoderSet, g: Graph, source: int, delta: float) -> Tensor:
    """The same changes in the replacement model: attention, norms and errors frozen, the
    transcoders recomputed layer by layer (exactly what the graph predicts, while no feature
    crosses its threshold)."""
    snap = snapshot(model, torch.tensor(g.tokens))
    tcs = tcs.to(snap.mlp_out.dtype)
    feats = encode_prompt(tcs, snap)
    runs = [_replacement_run(model, tcs, g, snap, feats.error, source, d) for d in (0.0, delta)]
    (in0, un0), (in1, un1) = runs
    out = torch.zeros(g.n_nodes, dtype=torch.float64)
    for i, (lay, p, f) in enumerate(g.features.tolist()):
        out[i] = float((in1[lay][p] - in0[lay][p]).double() @ tcs.W_enc[lay][:, f].double())
    d = un1.double() - un0.double()
    for j, tok in enumerate(g.logit_tokens):
        out[g.logit_index(j)] = float(d[tok] - d.mean())
    return out


def _replacement_run(
    model: Any, tcs: TranscoderSet, g: Graph, snap: Any, error: Tensor, source: int, delta: float
) -> tuple[list[Tensor], Tensor]:
    """MLP inputs and unembedding output of the replacement model with one feature moved."""
    layer, pos, feat = (int(v) for v in g.features[source])
    mlp_in, unembed = list(snap.mlp_in), snap.unembed[None]
    value = tcs.encode(layer, snap.mlp_in[layer])[pos, feat] + delta
    for _ in range(tcs.n_layers + 1):  # one more layer settles per pass
        acts = [tcs.encode(i, mlp_in[i]) for i in range(tcs.n_layers)]
        acts[layer][pos, feat] = value
        outs = [o + e for o, e in zip(tcs.decode(acts), error)]
        ins, unembed = frozen_forward(model, snap, snap.embed[None], [o[None] for o in outs])
        mlp_in = [x[0] for x in ins]
    return mlp_in, unembed[0]


def _snapshot_with(model: Any, tokens: Tensor, fwd: list) -> Any:
    kept: list[Tensor] = []
    n = model.dims.n_layers
    handle = model.unembed.register_forward_hook(lambda _m, _a, out: kept.append(out[:, -1]))
    try:
        _, cache = model.run_with_cache(
            tokens[None], names=[in_site(i) for i in range(n)], fwd_hooks=fwd
        )
    finally:
        handle.remove()

    class _S:
        mlp_in = torch.stack([cache[in_site(i)][0] for i in range(n)])
        unembed = kept[0][0]

    return _S


def verify(
    model: Any,
    tcs: TranscoderSet,
    g: Graph,
    nodes: list[str],
    mode: str = "ablate",
    scale: float = 2.0,
    downstream: int = 10,
    frozen: bool = False,
) -> list[Check]:
    """Intervene on each feature node id in ``nodes`` (``layer_feature_pos``) in the real model
    (``frozen``: in the replacement model, where the prediction is exact)."""
    if mode not in ("ablate", "steer"):
        raise MechscopeError(f"mode must be 'ablate' or 'steer', not {mode!r}")
    ids = {node_id(g, i): i for i in range(g.n_features)}
    checks = []
    tcs = tcs.to(next(model.hf.parameters()).dtype)
    for nid in nodes:
        if nid not in ids:
            raise MechscopeError(
                f"{nid!r} is not a feature node of this graph: pass ids like "
                f"{next(iter(ids), 'layer_feature_pos')}"
            )
        s = ids[nid]
        a = float(g.activations[s])
        delta = -a if mode == "ablate" else (scale - 1) * a
        pred = predict(g, s, delta)
        meas = (measure_frozen if frozen else _measure)(model, tcs, g, s, delta)
        # the logits and the downstream features the graph says change most
        feats = (pred[: g.n_features].abs() * (torch.arange(g.n_features) != s)).argsort(
            descending=True
        )
        chosen = [int(i) for i in feats[:downstream] if pred[int(i)] != 0]
        chosen += [g.logit_index(j) for j in range(len(g.logit_tokens))]
        checks.append(
            Check(
                nid,
                delta,
                [node_id(g, i) for i in chosen],
                [float(pred[i]) for i in chosen],
                [float(meas[i]) for i in chosen],
            )  # fmt: skip
        )
    return checks
