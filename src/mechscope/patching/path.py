"""Path patching (Wang et al. 2022, "Interpretability in the Wild", section 3.1 and appendix B).

Path patching measures the effect of *sender* heads or MLPs on *receiver* inputs along direct
paths only: through the residual stream, not through any other head or MLP. In the paper's
noising formulation (``direction="noise"``) the base run is clean and the source run corrupted.

1. Run base and source once, caching every layer's ``attn.hook_z`` and ``hook_mlp_out``, the base
   run's residual stream before each layer and its layer call arguments.
2. Run the base again from the first sender's layer with the senders' outputs (their ``hook_z``
   head slices, or ``hook_mlp_out``) set to their source values and every other head and MLP
   frozen to its base value, so the change reaches later layers only through the residual
   stream; cache each receiver's input. With everything frozen, a sender before the first
   receiver's layer changes that layer's residual by exactly its own output change (a head's z
   change through the HF output projection), so the run starts there from the base residual
   plus those changes instead of recomputing the layers in between (same numbers, less work).
3. Run the base again from the first receiver's layer, patching only the receivers' inputs with
   the values cached in step 2, and measure the metric.

Receivers (string or ``(node, input)`` tuple):

- ``"L9H6.q"`` / ``("L9H6", "q")``, also ``k`` and ``v``: the head's query/key/value input, patched
  at ``attn.hook_q/k/v`` (in Llama-style models the projection output; RoPE is applied after, as
  usual). Under grouped-query attention a key/value belongs to a KV head shared by
  ``n_heads / n_kv_heads`` query heads: "patch head h's k" patches KV head ``h // group``, so every
  query head of h's group sees the patched key (there is no per-query-head key to patch).
- ``"MLP9"`` / ``("MLP9", "in")``: the MLP's input. An MLP is a function of its input alone, so
  step 3 writes, at ``hook_mlp_out``, the output it computed from its step-2 input.
- ``"L9.resid_pre"`` / ``("L9", "resid_pre")``: the whole residual stream before layer 9.
- ``"logits"``: the unembedding's input. Step 2's final residual feeds the final norm and the
  unembedding directly and its logits are the result (no step 3; alongside other receivers it
  overrides them). The final norm's scale is recomputed from that residual, as the model does,
  not frozen: with every other component frozen the logits are exactly
  ``unembed(final_norm(resid_final_base + delta))``, ``delta`` being the senders' output change.

``freeze=False`` freezes nothing, so step 2 is plain activation patching of the senders (a check
of the plumbing); ``freeze_mlps=False`` freezes heads only, so paths through MLPs count as direct.
:func:`path_patch_heads` sweeps the sender over every head before the receiver, a layer's heads
stacked along the batch as variants (as in :mod:`mechscope.patching.engine`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from mechscope.ablation.nodes import Node
from mechscope.errors import MechscopeError
from mechscope.families import Dims
from mechscope.models.hooked import HookedModel
from mechscope.patching.engine import default_chunk
from mechscope.patching.pair import Pair, ReadPos, Runs, resolve, run_pair
from mechscope.patching.receivers import (
    Receiver,
    last_sender_layer,
    parse_receivers,
    parse_senders,
)
from mechscope.patching.result import Direction, PatchResult
from mechscope.progress import progress
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import Metric

Tensor = torch.Tensor


def _tile(t: Tensor, n: int) -> Tensor:
    return t.repeat(n, *([1] * (t.ndim - 1)))


def _prepare(pair: Pair) -> Runs:
    """Step 1 (base = clean when noising, corrupted when denoising)."""
    parts = ["blocks.*.attn.hook_z", "blocks.*.hook_mlp_out"]
    return run_pair(pair, parts, parts)


def _receiver_site(r: Receiver, dims: Dims) -> tuple[str, int | None]:
    """The site a receiver's input is read and written at, and its head axis index."""
    if r.kind == "q":
        return f"blocks.{r.layer}.attn.hook_q", r.head
    if r.kind in ("k", "v"):
        assert r.head is not None
        return f"blocks.{r.layer}.attn.hook_{r.kind}", r.head // (dims.n_heads // dims.n_kv_heads)
    return f"blocks.{r.layer}.{'hook_mlp_out' if r.kind == 'mlp' else 'hook_resid_pre'}", None


def _writer(runs: Runs, name: str, variants: int, frozen: bool, patches: list) -> Any:
    """Hook writing the base value (if frozen) and each variant's sender slices from the source."""
    b, base, src = runs.batch, runs.base[name], runs.source[name]

    def hook(act: Tensor, _hook: Any) -> Tensor:
        out = _tile(base, variants) if frozen else act.clone()
        for i, node in patches:
            rows = out[i * b : (i + 1) * b]
            if node.kind == "head":
                rows[:, :, node.index] = src[:, :, node.index]
            else:
                rows[...] = src
        return out

    return hook


def _delta(runs: Runs, node: Node) -> Tensor:
    """The sender's change of its output [batch pos d_model], source minus base.

    A head's is its z change pushed through the HF output projection alone (minus the bias).
    """
    if node.kind == "mlp":
        name = f"blocks.{node.layer}.hook_mlp_out"
        return runs.source[name] - runs.base[name]
    name = f"blocks.{node.layer}.attn.hook_z"
    base, dz = runs.base[name], torch.zeros_like(runs.base[name])
    dz[:, :, node.index] = runs.source[name][:, :, node.index] - base[:, :, node.index]
    model = runs.model
    o = model.block(node.layer).get_submodule(model.family.o)
    return o(dz.flatten(-2)) - o(torch.zeros_like(dz.flatten(-2)))


def _start(
    runs: Runs, variants: Sequence[Sequence[Node]], receivers: Sequence[Receiver], jump: bool
) -> tuple[int, Tensor, list[list[Node]]]:
    """Where step 2 starts, its residual [variant*batch pos d_model], the senders left to hook.

    With everything frozen (``jump``), a sender before the first receiver changes that
    receiver's residual by exactly its own output change, so step 2 starts at the first
    receiver's layer from the base residual plus those changes instead of running the layers
    in between.
    """
    n, b = runs.model.dims.n_layers, runs.batch
    start = min((s.layer for var in variants for s in var), default=0)
    if not jump:
        return start, _tile(runs.resid(start), len(variants)), [list(var) for var in variants]
    start = min(n if r.layer is None else r.layer for r in receivers)
    resid = _tile(runs.resid(start), len(variants))
    for i, var in enumerate(variants):
        for s in var:
            if s.layer < start:
                resid[i * b : (i + 1) * b] += _delta(runs, s)
    return start, resid, [[s for s in var if s.layer >= start] for var in variants]


def _step2(
    runs: Runs,
    variants: Sequence[Sequence[Node]],
    receivers: Sequence[Receiver],
    freeze: bool,
    freeze_mlps: bool,
) -> tuple[dict[Receiver, Tensor], Tensor | None]:
    model, v, n = runs.model, len(variants), runs.model.dims.n_layers
    start, resid, variants = _start(runs, variants, receivers, freeze and freeze_mlps)
    captured: dict[Receiver, Tensor] = {}
    hooks: list[tuple[str, Any]] = []  # capture hooks first: they must see values before freezing
    for r in receivers:
        if r.kind != "logits":
            name, index = _receiver_site(r, model.dims)

            def capture(act: Tensor, _hook: Any, r: Receiver = r, index: Any = index) -> None:
                captured[r] = (act if index is None else act[:, :, index]).detach().clone()

            hooks.append((name, capture))
    for layer in range(start, n):
        for site, kind in (("attn.hook_z", "head"), ("hook_mlp_out", "mlp")):
            patches = [(i, s) for i, var in enumerate(variants) for s in var if s.layer == layer]
            patches = [(i, s) for i, s in patches if s.kind == kind]
            frozen = freeze and (kind == "head" or freeze_mlps)
            if frozen or patches:
                name = f"blocks.{layer}.{site}"
                hooks.append((name, _writer(runs, name, v, frozen, patches)))
    stop = None  # once every receiver input is cached, the rest of step 2 is not needed
    if all(r.kind != "logits" for r in receivers):
        stop = f"blocks.{max(r.layer for r in receivers if r.layer is not None)}.hook_resid_post"
    logits = None
    with model.hooks(hooks, stop_after=stop):
        logits = model.run_from(resid, start, runs.inputs)
    return captured, logits


def _step3(runs: Runs, captured: dict[Receiver, Tensor], variants: int) -> Tensor:
    dims, hooks = runs.model.dims, []
    for r, value in captured.items():
        name, index = _receiver_site(r, dims)

        def write(act: Tensor, _hook: Any, value: Tensor = value, index: Any = index) -> Tensor:
            if index is None:
                return value
            out = act.clone()
            out[:, :, index] = value
            return out

        hooks.append((name, write))
    start = min(r.layer for r in captured if r.layer is not None)
    with runs.model.hooks(hooks):
        return runs.model.run_from(_tile(runs.resid(start), variants), start, runs.inputs)


def _run_variants(
    runs: Runs,
    variants: Sequence[Sequence[Node]],
    receivers: Sequence[Receiver],
    freeze: bool,
    freeze_mlps: bool,
) -> Tensor:
    """Metric [variant batch] of path patching each variant's senders into the receivers."""
    captured, logits = _step2(runs, variants, receivers, freeze, freeze_mlps)
    if logits is None:  # no logits receiver: step 2 stopped early
        logits = _step3(runs, captured, len(variants))
    b = runs.batch
    return torch.stack([runs.evaluate(logits[i * b : (i + 1) * b]) for i in range(len(variants))])


def _result(name: str, axes: tuple[str, ...], values: Tensor, runs: Runs) -> PatchResult:
    clean, corrupt = runs.clean_corrupt()
    return PatchResult(name, axes, values, clean, corrupt, runs.pair.direction)


def path_patch(
    model: HookedModel,
    batch: TaskBatch,
    metric: Metric,
    senders: str | Iterable[str | Node],
    receivers: Any = "logits",
    *legacy: Any,
    direction: Direction = "noise",
    freeze: bool = True,
    freeze_mlps: bool = True,
    read_pos: ReadPos = "last",
    attention_mask: Tensor | None = None,
) -> PatchResult:
    """The metric after path patching ``senders`` (a node spec of heads/MLPs) into ``receivers``.

    ``batch`` and ``metric(logits, batch) -> [batch]`` as in :func:`mechscope.patching.patch`;
    ``receivers`` is one receiver or a list (see the module docstring). Returns a
    :class:`PatchResult` with ``axes=()`` (``values`` is the mean over prompts; ``normalized()``
    is 1 at the clean and 0 at the corrupted metric). The deprecated token form
    ``path_patch(model, clean_tokens, corrupt_tokens, metric(logits), senders, ...)`` still works.
    """
    pair, (senders, receivers) = resolve(
        model, batch, (metric, senders, receivers, *legacy), ("senders", "receivers"), ("logits",),
        caller="path_patch", direction=direction, read_pos=read_pos,
        attention_mask=attention_mask,
    )  # fmt: skip
    recv = parse_receivers(receivers, model.dims)
    nodes = parse_senders(senders, recv, model.dims)
    with torch.no_grad():
        runs = _prepare(pair)
        values = _run_variants(runs, [nodes], recv, freeze, freeze_mlps)[0]
    name = f"path:{','.join(map(str, nodes))}->{','.join(map(str, recv))}"
    return _result(name, (), values.mean(), runs)


def path_patch_heads(
    model: HookedModel,
    batch: TaskBatch,
    metric: Metric,
    receivers: Any = "logits",
    *legacy: Any,
    direction: Direction = "noise",
    freeze: bool = True,
    freeze_mlps: bool = True,
    chunk: int | None = None,
    layers: Sequence[int] | None = None,
    quiet: bool = False,
    read_pos: ReadPos = "last",
    attention_mask: Tensor | None = None,
) -> PatchResult:
    """Path patching from every single head before the receivers: values [layer head].

    Rows are layers ``0 .. L-1`` with ``L`` the receivers' first layer (all layers for logits;
    an MLP receiver of a sequential model also takes its own layer's heads), or ``layers``
    (row i is then ``layers[i]``). ``chunk`` caps the heads per forward (variants). Arguments
    otherwise as :func:`path_patch`.
    """
    pair, (receivers,) = resolve(
        model, batch, (metric, receivers, *legacy), ("receivers",), ("logits",),
        caller="path_patch_heads", direction=direction, read_pos=read_pos,
        attention_mask=attention_mask, chunk=chunk,
    )  # fmt: skip
    recv = parse_receivers(receivers, model.dims)
    dims = model.dims
    top = min(last_sender_layer(r, dims, "head") for r in recv)
    layers = list(range(top)) if layers is None else list(layers)
    if any(not 0 <= layer < top for layer in layers):
        raise MechscopeError(f"sender layers must lie in [0, {top}) for these receivers: {layers}")
    with torch.no_grad():
        runs = _prepare(pair)
        chunk = pair.chunk or default_chunk(model, *pair.base.shape)
        rows = []
        for layer in progress(layers, desc="path patching", quiet=quiet, unit="layer"):
            heads = [(Node("head", layer, h),) for h in range(dims.n_heads)]
            out = [
                _run_variants(runs, heads[i : i + chunk], recv, freeze, freeze_mlps)
                for i in range(0, len(heads), chunk)
            ]
            rows.append(torch.cat(out).mean(-1))
    values = torch.stack(rows) if rows else torch.zeros(0, dims.n_heads)
    return _result(f"path_heads:{','.join(map(str, recv))}", ("layer", "head"), values, runs)
