"""Faithfulness of a circuit: the metric with every edge outside it patched to its corrupted value.

As in EAP-IG's ``evaluate_graph`` (Hanna et al. 2024), a receiver reads its in-circuit writers as
they are in this run and its out-of-circuit writers as they were in the corrupted run:

    input_p = resid_p + sum over writers u with u -> p not in the circuit of (corrupt_u - current_u)

where ``resid_p`` is the residual that p reads in this (intervened) run and ``current_u`` is u's
output in this run (so the effect of a patch propagates through the nodes in the circuit). Steps:

1. Run the corrupted input once and keep every writer's output ``[batch pos node d_model]``.
2. Run the clean input layer by layer with hooks: record each writer's output as it is made
   (``blocks.0.hook_resid_pre``, ``attn.hook_result``, ``hook_mlp_out``); at ``hook_resid_pre``
   build every q/k/v port's input from the formula, push it through the layer's own ``ln1`` and the
   projection (read off the module, see :mod:`mechscope.circuits.nodes`) and write the ports that
   miss an edge into ``attn.hook_q/k/v``; rebuild the MLP's output by calling the layer's own
   ``ln2`` and MLP modules on its port input; rebuild the last ``hook_resid_post`` for the logits.
   With ungrouped GQA ports the batch runs as replicas (see :mod:`mechscope.circuits.gqa`).
3. ``faithfulness = (metric - corrupt) / (clean - corrupt)`` on batch means: 1 for the full
   graph (nothing is rewritten, so the run is the clean run bit for bit), 0 for the empty one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mechscope.circuits.circuit import Circuit
from mechscope.circuits.gqa import mix_z, per_replica
from mechscope.circuits.graph import Graph
from mechscope.circuits.nodes import (
    graph_for,
    kv_repeat,
    layer_module,
    node_sites,
    qkv_maps,
    run_nodes,
    stack_nodes,
)
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import Metric, logit_diff, normalized

Tensor = torch.Tensor


class Evaluator:
    """Runs the clean input with a given edge set [node port] patched; caches what all runs share."""

    def __init__(
        self,
        model: HookedModel,
        batch: TaskBatch,
        metric: Metric = logit_diff,
        graph: Graph | None = None,
    ) -> None:
        batch.require_aligned()
        self.model, self.batch, self.metric = model, batch, metric
        self.graph = graph_for(model, graph)
        clean_logits, _ = run_nodes(model, batch.clean_tokens, batch.clean_mask)
        n = model.dims.n_layers
        resid = ["blocks.*.hook_resid_pre", f"blocks.{n - 1}.hook_resid_post"]
        resid += [] if model.dims.parallel else ["blocks.*.hook_resid_mid"]
        with torch.no_grad():
            corrupt_logits, cache = model.run_with_cache(
                batch.corrupt_tokens, [*node_sites(model), *resid], batch.clean_mask
            )
        # Ungrouped GQA ports run ``rep`` replicas of the batch (see mechscope.circuits.gqa).
        self.rep = rep = kv_repeat(model, self.graph)
        self.corrupt = stack_nodes(cache, n).repeat(rep, 1, 1, 1)
        self.corrupt_resid = {
            k.split(".")[-1] + k.split(".")[1]: v.repeat(rep, 1, 1)
            for k, v in cache.items()
            if "resid" in k
        }
        self.clean_values = metric(clean_logits, batch).detach().double()
        self.corrupt_values = metric(corrupt_logits, batch).detach().double()
        self.clean_value = float(self.clean_values.mean())
        self.corrupt_value = float(self.corrupt_values.mean())
        self.maps = [qkv_maps(model, layer) for layer in range(model.dims.n_layers)]
        self._values: dict[tuple[Any, ...], Tensor] = {}  # see values()

    def logits(self, mask: Tensor) -> Tensor:
        """Logits of the clean run with every edge outside ``mask`` [node port] patched.

        A floating-point mask patches each edge by the fraction ``1 - mask`` (its input moves by
        that fraction of ``corrupt_u - current_u``): a directional derivative for tests.
        """
        self.graph.check_mask(mask)
        edges = self.graph.edge_mask
        if mask.is_floating_point():
            missing = ((1 - mask) * edges).to(self.corrupt.dtype)
        else:
            missing = (~mask & edges).to(self.corrupt.dtype)
        state = _State(self, missing)
        tokens, attention = self.batch.clean_tokens, self.batch.clean_mask
        with torch.no_grad(), self.model.hooks(fwd=state.hooks()):
            logits = self.model(tokens.repeat(self.rep, 1), attention.repeat(self.rep, 1))
        return logits[: len(self.batch)]

    def values(self, mask: Tensor) -> Tensor:
        """Per-prompt metric of the patched run, ``[prompt]`` (float64); one run per distinct
        mask (a curve point that is also the kept circuit, MIB's rankings that meet)."""
        key = (str(mask.dtype), tuple(mask.shape), mask.detach().cpu().numpy().tobytes())
        if key not in self._values:
            self._values[key] = self.metric(self.logits(mask), self.batch).detach().double()
        return self._values[key]

    def value(self, mask: Tensor) -> float:
        """Batch-mean metric of the patched run."""
        return float(self.values(mask).mean())

    def faithfulness(self, mask: Tensor) -> float:
        return float(normalized(self.value(mask), self.clean_value, self.corrupt_value))

    def faithfulness_ci(
        self, values: Tensor, level: float = 0.95, n_boot: int = 1000, seed: int = 0
    ) -> tuple[Any, Any]:
        """Bootstrap interval over prompts of the faithfulness of patched runs whose per-prompt
        metrics are ``values`` (``[prompt]`` or ``[prompt run]``, from :meth:`values`): each
        resample recomputes the batch-mean ratio with the clean and corrupted means of the same
        prompts (:func:`mechscope.stats.normalized_ci`). No extra forward."""
        from mechscope.stats import normalized_ci

        runs = values.reshape(len(self.batch), -1).numpy()
        ends = self.clean_values.numpy(), self.corrupt_values.numpy()
        lo, hi = normalized_ci(runs, *ends, level=level, n_boot=n_boot, seed=seed)
        if values.ndim == 1:
            return float(lo[0]), float(hi[0])
        return lo, hi


class _State:
    """The hook functions of one patched run and what they share."""

    def __init__(self, ev: Evaluator, missing: Tensor) -> None:
        self.ev, self.g, self.missing = ev, ev.graph, missing
        self.current = ev.corrupt.clone()  # filled with this run's writer outputs as they appear
        self.resid: dict[str, Tensor] = {}
        self.qkv: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}
        self.busy = False
        self.mixed: set[int] = set()  # layers whose replicas differ before attn.hook_z

    def hooks(self) -> list[tuple[str, Any]]:
        n = self.g.n_layers
        hooks: list[tuple[str, Any]] = [("blocks.*.hook_resid_pre", self.on_resid_pre)]
        if not self.g.parallel:
            hooks.append(("blocks.*.hook_resid_mid", self.keep))
        hooks += [(f"blocks.*.attn.hook_{c}", self.on_qkv) for c in "qkv"]
        hooks += [("blocks.*.attn.hook_result", self.on_result)]
        if self.ev.rep > 1:
            hooks.append(("blocks.*.attn.hook_z", self.on_z))
        hooks += [
            ("blocks.*.hook_mlp_out", self.on_mlp),
            (f"blocks.{n - 1}.hook_resid_post", self.on_final),
        ]
        return hooks

    def port_input(self, base: Tensor, key: str, ports: slice | int) -> Tensor:
        """The formula of the module docstring for a port (or a slice of ports) of one layer.

        Summed over whichever side is smaller: the missing edges from this run's residual
        ``base``, or the present ones from the corrupted run's residual ``corrupt_resid[key]``
        (``resid + sum(corrupt_u - current_u)`` over all writers is the corrupted residual).
        """
        first = ports if isinstance(ports, int) else ports.start
        n_up = int(self.g.n_up[first])
        missing = self.missing[:n_up, ports].reshape(n_up, -1)
        present = 1 - missing
        rows_m = missing.ne(0).any(1).nonzero()[:, 0]
        rows_p = present.ne(0).any(1).nonzero()[:, 0]
        if len(rows_p) < len(rows_m):
            rows, w, sign, base = rows_p, present, -1.0, self.ev.corrupt_resid[key]
        else:
            rows, w, sign = rows_m, missing, 1.0
        diff = sign * (self.ev.corrupt[:, :, rows] - self.current[:, :, rows])
        out = base[:, :, None] + torch.einsum("bpnd,nk->bpkd", diff, w[rows])
        return out[:, :, 0] if isinstance(ports, int) else out

    def keep(self, x: Tensor, hook: Any) -> None:
        self.resid[hook.name.split(".")[-1] + str(hook.layer())] = x

    def on_resid_pre(self, x: Tensor, hook: Any) -> None:
        layer = hook.layer()
        self.keep(x, hook)
        if layer == 0:
            self.current[:, :, 0] = x
        g, h, kv = self.g, self.g.n_heads, self.g.n_kv
        start = g.port_index(layer, "q")
        ports = slice(start, start + h + 2 * kv)
        need = (self.missing[:, ports] != 0).any(0)
        if not bool(need.any()):
            return
        normed = layer_module(self.ev.model, layer, self.ev.model.family.ln1)(
            self.port_input(x, f"hook_resid_pre{layer}", ports)
        )
        spans = {"q": (0, h), "k": (h, h + kv), "v": (h + kv, h + 2 * kv)}
        for (weight, bias), c in zip(self.ev.maps[layer], "qkv"):
            a, b = spans[c]
            if b - a != weight.shape[1]:  # ungrouped k/v ports: one per query head
                weight = weight.repeat_interleave(self.ev.rep, dim=1)
                bias = bias.repeat_interleave(self.ev.rep, dim=0)
            value = torch.einsum("bphd,dhe->bphe", normed[:, :, a:b], weight) + bias
            self.qkv[(layer, c)] = (value, need[a:b])

    def on_qkv(self, x: Tensor, hook: Any) -> Tensor | None:
        entry = self.qkv.pop((hook.layer(), hook.name[-1]), None)
        if entry is None:
            return None
        value, need = entry
        if value.shape[2] != x.shape[2]:
            self.mixed.add(hook.layer())
            return per_replica(value, need, x, self.ev.rep)
        return torch.where(need[:, None], value.to(x.dtype), x)

    def on_z(self, x: Tensor, hook: Any) -> Tensor | None:
        return mix_z(x, self.ev.rep) if hook.layer() in self.mixed else None

    def on_result(self, x: Tensor, hook: Any) -> None:
        i = self.g.node_index(hook.layer(), 0)
        self.current[:, :, i : i + self.g.n_heads] = x

    def on_mlp(self, x: Tensor, hook: Any) -> Tensor | None:
        if self.busy:
            return None
        layer, model = hook.layer(), self.ev.model
        port = self.g.port_index(layer, "mlp")
        out = None
        if bool((self.missing[:, port] != 0).any()):
            key = f"hook_resid_pre{layer}" if self.g.parallel else f"hook_resid_mid{layer}"
            base = self.resid[key]
            ln2 = layer_module(model, layer, model.family.ln2)
            mlp = layer_module(model, layer, model.family.mlp)
            self.busy = True
            try:
                y = mlp(ln2(self.port_input(base, key, port)))
            finally:
                self.busy = False
            out = (y[0] if isinstance(y, tuple) else y).to(x.dtype)
        self.current[:, :, self.g.node_index(layer)] = x if out is None else out
        return out

    def on_final(self, x: Tensor, hook: Any) -> Tensor | None:
        port = len(self.g.ports) - 1
        if not bool((self.missing[:, port] != 0).any()):
            return None
        key = f"hook_resid_post{self.g.n_layers - 1}"
        return self.port_input(x, key, port).to(x.dtype)


def faithfulness(
    model: HookedModel, batch: TaskBatch, circuit: Circuit, metric: Metric = logit_diff
) -> float:
    """Normalised metric of the circuit (0 = corrupted run, 1 = clean run)."""
    return Evaluator(model, batch, metric, circuit.graph).faithfulness(circuit.mask)


def curve_sizes(total_edges: int, fractions: Sequence[float]) -> list[int]:
    """Distinct edge counts (at least 1) for fractions of ``total_edges``, ascending."""
    return sorted({max(1, round(f * total_edges)) for f in fractions})


def faithfulness_curve(
    model: HookedModel,
    batch: TaskBatch,
    scored: Circuit,
    sizes: Sequence[int],
    metric: Metric = logit_diff,
    select: str = "top_n",
) -> list[tuple[int, float]]:
    """(n edges, faithfulness) of ``scored.top_n(n)`` (or ``greedy``) for each size."""
    pick = _selector(scored, select)
    ev = Evaluator(model, batch, metric, scored.graph)
    return [(n, ev.faithfulness(pick(n).mask)) for n in sizes]


@dataclass(frozen=True)
class Smallest:
    """Result of :func:`smallest_faithful`.

    ``n``: the circuit size found (None if no evaluated size reaches ``target``); ``faithfulness``:
    its faithfulness; ``curve``: every (size, faithfulness) evaluated, ascending by size;
    ``grid_n``: the smallest grid size reaching the target (``n`` before refinement).
    """

    n: int | None
    faithfulness: float | None
    target: float
    curve: list[tuple[int, float]]
    grid_n: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``n, faithfulness, target, grid_n`` and ``curve`` as
        ``{"n_edges", "faithfulness"}`` objects."""
        curve = [{"n_edges": n, "faithfulness": f} for n, f in self.curve]
        return {
            "n": self.n,
            "faithfulness": self.faithfulness,
            "target": self.target,
            "grid_n": self.grid_n,
            "curve": curve,
        }


def geometric_sizes(total: int, start: float = 0.001, factor: float = 2**0.5) -> list[int]:
    """Circuit sizes ``start * total * factor**k`` (at least 1, distinct, ascending), up to and
    including ``total``."""
    if not 0 < start <= 1 or factor <= 1:
        raise MechscopeError(f"need 0 < start <= 1 and factor > 1, got {start}, {factor}")
    sizes, size = [], start * total
    while size < total:
        sizes.append(max(1, round(size)))
        size *= factor
    return sorted({*sizes, total})


def first_reaching(
    evaluate: Callable[[int], float], sizes: Sequence[int], target: float, refine: bool = True
) -> Smallest:
    """Scan ``sizes`` upwards and stop at the first whose faithfulness reaches ``target``.

    Faithfulness is not monotone in the number of edges, so the answer is defined on the grid:
    every smaller grid size was evaluated and fell short. With ``refine``, bisect between the
    last grid size below the target and the first at or above it; that gives a crossing (a size
    ``n`` reaching the target with ``n - 1`` below it) inside the interval, not necessarily the
    smallest such size there.
    """
    curve: list[tuple[int, float]] = []
    below = 0
    for n in sorted(set(sizes)):
        f = evaluate(n)
        curve.append((n, f))
        if f >= target:
            break
        below = n
    else:
        return Smallest(None, None, target, curve, None)
    grid_n, best_n, best = curve[-1][0], curve[-1][0], curve[-1][1]
    lo, hi = below, grid_n
    while refine and hi - lo > 1:
        mid = (lo + hi) // 2
        f = evaluate(mid)
        curve.append((mid, f))
        if f >= target:
            hi, best_n, best = mid, mid, f
        else:
            lo = mid
    return Smallest(best_n, best, target, sorted(curve), grid_n)


def smallest_faithful(
    model: HookedModel,
    batch: TaskBatch,
    scored: Circuit,
    target: float = 0.8,
    metric: Metric = logit_diff,
    *,
    sizes: Sequence[int] | None = None,
    select: str = "top_n",
    refine: bool = True,
) -> Smallest:
    """The smallest circuit (``top_n`` or ``greedy`` of ``scored``) whose faithfulness reaches
    ``target``, over ``sizes`` (default :func:`geometric_sizes`: 0.1% of the edges upwards by
    factors of sqrt 2); see :func:`first_reaching` for what is and is not guaranteed."""
    pick = _selector(scored, select)
    ev = Evaluator(model, batch, metric, scored.graph)
    grid = geometric_sizes(scored.n_edges) if sizes is None else sizes
    return first_reaching(lambda n: ev.faithfulness(pick(n).mask), grid, target, refine)


def _selector(scored: Circuit, select: str) -> Callable[[int], Circuit]:
    if select not in ("top_n", "greedy"):
        raise MechscopeError(f"unknown selection {select!r}; choose top_n or greedy")
    return scored.top_n if select == "top_n" else scored.greedy
