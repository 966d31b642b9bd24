"""The exact batched patching engine: many patch variants per forward, each from its own layer.

A patch variant replaces a slice of one site's activation (a position, a head, a neuron, ...) in
the *base* run by the same slice from the *source* run. One forward per variant over the whole
model is the definition; the engine gives the same numbers with less work:

1. Run the base input once, recording each decoder layer's call arguments
   (:meth:`HookedModel.capture_inputs`) and caching the residual stream before every layer
   (and after the last). Run the source input once, caching the patched site
   (:func:`mechscope.patching.pair.run_pair`).
2. Nothing before the patched layer ``L`` changes, so a variant starts at ``L`` from the base
   run's cached residual (:meth:`HookedModel.run_from` calls the HF layers ``L..n-1``).
3. ``V`` variants of the same layer are stacked along the batch: variant ``v`` occupies rows
   ``v*B .. (v+1)*B - 1`` of one forward. A residual-stream patch edits the starting residual;
   any other site is rewritten by a hook in layer ``L`` that writes each row block's slice.
4. A variant patched at position ``p`` recomputes only positions ``>= p`` (attention is causal;
   see :mod:`mechscope.patching.prefix`). Variants are grouped by position, latest first, and a
   forward starts at the group's earliest position ``p0``; groups stay small enough that this
   recomputes at most ``WASTE`` times the rows the variants need on their own.
5. A forward holds at most ``chunk * B * pos`` token rows (``chunk`` variants of every
   position), which bounds memory; the metric is evaluated on each variant's ``B`` rows.
6. With ``read_pos`` (the one position per prompt that the metric reads, e.g. the last token),
   only those positions go through the final norm and the unembedding (for SmolLM2 the
   unembedding costs a fifth of a forward per position); the metric sees logits that are NaN
   everywhere else, and a metric that reads elsewhere is an error rather than a wrong number.

The sweeps (:mod:`mechscope.patching.sweeps`) also skip variants whose source slice equals the
base slice (their value is the base metric) and start an all-position patch at the first
position where the two differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from mechscope.errors import NotAvailable
from mechscope.models.hooked import HookedModel
from mechscope.patching.pair import Pair, Runs, run_pair
from mechscope.patching.prefix import Prefix, record, unembed

Tensor = torch.Tensor
Index = tuple[Any, ...]  # an index into an activation [batch ...], applied to base and source

MAX_ROWS = 4096  # token rows per forward
MAX_LOGITS = 2**26  # logit entries per forward (256 MB in float32)
WASTE = 1.25  # position reuse: recompute at most this many times the rows the variants need


def default_chunk(model: HookedModel, batch: int, pos: int) -> int:
    """Variants per forward so that a forward has at most MAX_ROWS rows and MAX_LOGITS logits."""
    rows = min(MAX_ROWS, MAX_LOGITS // model.dims.d_vocab)
    return max(1, rows // (batch * pos))


def prepare(pair: Pair, site_names: Sequence[str], positional: bool = False) -> Runs:
    """Step 1: run base and source once, caching what the variants start from and patch in.

    The base run also caches ``site_names`` (the sweeps compare them with the source's);
    ``positional`` records the base run's keys and values for position reuse.
    """
    model = pair.model
    for name in site_names:
        if name not in model.sites:
            raise NotAvailable(
                f"this {model.family.name} model has no site {name!r} to patch; "
                "choose another sweep"
            )
    runs = run_pair(pair, site_names, site_names)
    prefix = None
    if positional and runs.inputs.cache_kwarg is not None:
        prefix = record(model, runs.base["blocks.0.hook_resid_pre"], runs.inputs)
    scratch = None
    if pair.read_pos is not None:
        scratch = torch.full_like(runs.base_logits, float("nan"))
    chunk = pair.chunk or default_chunk(model, *pair.base.shape)
    return replace(runs, chunk=chunk, prefix=prefix, scratch=scratch)


def run_variants(
    runs: Runs,
    start: int,
    site: str | None,
    src: Tensor,
    indices: Sequence[Index],
    positions: Sequence[int] | None = None,
) -> Tensor:
    """Metric per prompt [variant batch] of patching ``src[index]`` for each index.

    The forwards start at layer ``start``; ``site=None`` patches the starting residual itself,
    otherwise a hook on ``site`` (a site of layer ``start``) does. ``positions`` gives each
    variant's patched position (``index[1]``) when it patches one position only.
    """
    out = torch.zeros(len(indices), runs.batch)
    for p0, ids in _groups(runs, positions, len(indices)):
        out[ids] = _run_chunk(runs, start, site, src, [indices[i] for i in ids], p0)
    return out


def _groups(runs: Runs, positions: Sequence[int] | None, n: int) -> list[tuple[int, list[int]]]:
    """(first recomputed position, variant ids) per forward.

    With position reuse, variants are taken latest position first; a group grows while its rows
    ``len * (pos - p0)`` stay within the row budget and within WASTE times the rows its variants
    need on their own (``sum(pos - p)``), so that late positions are not recomputed from early.
    """
    if positions is None or runs.prefix is None:
        return [(0, list(range(i, min(i + runs.chunk, n)))) for i in range(0, n, runs.chunk)]
    pos = runs.base_logits.shape[1]
    budget = runs.chunk * pos  # token rows per prompt in one forward
    groups: list[tuple[int, list[int]]] = []
    ids: list[int] = []
    need = 0
    for i in sorted(range(n), key=lambda i: -positions[i]):
        rows = (len(ids) + 1) * (pos - positions[i])
        if ids and (rows > budget or rows > WASTE * (need + pos - positions[i])):
            groups.append((positions[ids[-1]], ids))
            ids, need = [], 0
        ids.append(i)
        need += pos - positions[i]
    groups.append((positions[ids[-1]], ids))
    return groups


def shift(index: Index, p0: int) -> Index:
    """``index`` into a [batch pos ...] activation, moved to its positions ``p0..``."""
    if p0 == 0 or len(index) < 2 or not isinstance(index[1], int):
        return index
    return (index[0], index[1] - p0, *index[2:])


def _run_chunk(
    runs: Runs, start: int, site: str | None, src: Tensor, indices: Sequence[Index], p0: int
) -> Tensor:
    b, v, model = runs.batch, len(indices), runs.model
    tail = src[:, p0:]

    def write(act: Tensor) -> Tensor:
        act = act.clone()
        for i, index in enumerate(indices):
            here = shift(index, p0)
            act[i * b : (i + 1) * b][here] = tail[here]
        return act

    resid = runs.resid(start)[:, p0:].repeat(v, 1, 1)
    if site is None:
        resid = write(resid)
    hooks = [] if site is None else [(site, lambda act, _hook: write(act))]
    cache = None
    if p0:
        assert runs.prefix is not None
        cache = Prefix(runs.prefix, p0, v * b)
    with model.hooks(hooks):
        h = model.run_from(resid, start, runs.inputs, kv_cache=cache, logits=False)
    if runs.read_pos is None:
        logits = unembed(model, h)
        if p0:
            logits = torch.cat([runs.base_logits[:, :p0].repeat(v, 1, 1), logits], dim=1)
        return torch.stack([runs.evaluate(logits[i * b : (i + 1) * b]) for i in range(v)])
    return _read_metrics(runs, h, v, p0)


def _read_metrics(runs: Runs, h: Tensor, v: int, p0: int) -> Tensor:
    """Metric per variant [v batch] from final residuals, unembedding only ``read_pos``."""
    assert runs.read_pos is not None
    b, n = runs.batch, runs.model.dims.n_layers
    at = runs.read_pos.to(h.device)
    rows = torch.arange(b, device=h.device)
    base_final = runs.resid(n)[rows, at]  # prompts whose read position precedes p0
    late = (at >= p0)[:, None]
    picked = h.unflatten(0, (v, b))[:, rows, (at - p0).clamp(min=0)]  # [v b d_model]
    read = unembed(runs.model, torch.where(late, picked, base_final))  # [v b d_vocab]
    logits = runs.scratch
    assert logits is not None
    out = []
    for i in range(v):
        logits[rows, at] = read[i]
        out.append(runs.evaluate(logits))
    return torch.stack(out)
