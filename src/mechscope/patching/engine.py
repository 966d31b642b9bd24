"""The exact batched patching engine: many patch variants per forward, each from its own layer.

A patch variant replaces a slice of one site's activation (a position, a head, a neuron, ...) in
the *base* run by the same slice from the *source* run. One forward per variant over the whole
model is the definition; the engine gives the same numbers with less work:

1. Run the base input once, recording each decoder layer's call arguments
   (:meth:`HookedModel.capture_inputs`) and caching the residual stream before every layer
   (and after the last). Run the source input once, caching the patched site.
2. Nothing before the patched layer ``L`` changes, so a variant starts at ``L`` from the base
   run's cached residual (:func:`.prefix.suffix_resid` calls the HF layers ``L..n-1``).
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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mechscope.cache import Cache
from mechscope.errors import MechscopeError, NotAvailable
from mechscope.models.hooked import HookedModel
from mechscope.models.inputs import LayerInputs
from mechscope.patching.prefix import Prefix, Recorder, cache_kwarg, record, suffix_resid, unembed

Tensor = torch.Tensor
Metric = Callable[[Tensor], Tensor]  # logits [batch pos d_vocab] -> [batch]
Index = tuple[Any, ...]  # an index into an activation [batch ...], applied to base and source

MAX_ROWS = 4096  # token rows per forward
MAX_LOGITS = 2**26  # logit entries per forward (256 MB in float32)
WASTE = 1.25  # position reuse: recompute at most this many times the rows the variants need


@dataclass(frozen=True)
class Runs:
    """The two unpatched runs that every variant of a sweep starts from."""

    model: HookedModel
    metric: Metric
    inputs: LayerInputs  # the base run's layer arguments
    base: Cache  # the base run's resid_pre of every layer and the last resid_post
    source: Cache  # the source run's patched site
    base_logits: Tensor  # [batch pos d_vocab]
    base_metric: Tensor  # [batch]
    source_metric: Tensor  # [batch]
    chunk: int  # variants per forward, counted at full length
    prefix: Recorder | None  # the base run's keys and values, for position reuse
    read_pos: Tensor | None = None  # [batch] the one position the metric reads per prompt
    scratch: Tensor | None = None  # NaN logits like base_logits, filled at read_pos per variant

    @property
    def batch(self) -> int:
        return self.inputs.batch

    def resid(self, layer: int) -> Tensor:
        """The base run's residual stream before ``layer`` (``n_layers``: after the last)."""
        n = self.model.dims.n_layers
        if layer == n:
            return self.base[f"blocks.{n - 1}.hook_resid_post"]
        return self.base[f"blocks.{layer}.hook_resid_pre"]


def evaluate(metric: Metric, logits: Tensor, batch: int) -> Tensor:
    """The metric on logits of ``batch`` prompts, checked to be a [batch] tensor."""
    out = torch.as_tensor(metric(logits))
    if out.shape != (batch,):
        raise MechscopeError(
            f"metric must return a [batch] tensor of {batch} values per prompt, got shape "
            f"{tuple(out.shape)}; return one value per prompt, e.g. a logit difference"
        )
    return out.detach().float().cpu()


def check_read(values: Tensor, read_pos: Tensor | None) -> Tensor:
    """``values`` of a metric whose logits exist only at ``read_pos``: NaN means it read elsewhere."""
    if read_pos is not None and bool(values.detach().isnan().any()):
        raise MechscopeError(
            "the metric gave NaN with read_pos set: it reads logits at positions other than "
            "read_pos, which are not computed; pass the positions it reads, or read_pos=None"
        )
    return values


def default_chunk(model: HookedModel, batch: int, pos: int) -> int:
    """Variants per forward so that a forward has at most MAX_ROWS rows and MAX_LOGITS logits."""
    rows = min(MAX_ROWS, MAX_LOGITS // model.dims.d_vocab)
    return max(1, rows // (batch * pos))


@dataclass(frozen=True)
class Request:
    """What a sweep is asked to patch: from ``source`` into ``base`` (token ids [batch pos])."""

    model: HookedModel
    base: Tensor
    source: Tensor
    metric: Metric
    attention_mask: Tensor | None = None
    chunk: int | None = None  # variants per forward; None: see default_chunk
    read_pos: Tensor | None = None  # [batch] the one position the metric reads per prompt


def _check_read_pos(read_pos: Tensor | None, shape: tuple[int, ...]) -> Tensor | None:
    if read_pos is None:
        return None
    read_pos = torch.as_tensor(read_pos).long().cpu()
    if read_pos.shape != shape[:1] or not bool(((read_pos >= 0) & (read_pos < shape[1])).all()):
        raise MechscopeError(
            f"read_pos must hold one position in [0, {shape[1]}) per prompt ({shape[0]} values), "
            f"got {read_pos.tolist()}; pass e.g. the index of each prompt's last token"
        )
    return read_pos


def prepare(req: Request, site_names: Sequence[str], positional: bool = False) -> Runs:
    """Step 1: run base and source once, caching what the variants start from and patch in.

    The base run also caches ``site_names`` (the sweeps compare them with the source's).
    """
    model, metric, attention_mask = req.model, req.metric, req.attention_mask
    if req.chunk is not None and req.chunk < 1:
        raise MechscopeError(f"chunk must be at least 1 variant per forward, got {req.chunk}")
    for name in site_names:
        if name not in model.sites:
            raise NotAvailable(
                f"this {model.family.name} model has no site {name!r} to patch; "
                "choose another sweep"
            )
    n = model.dims.n_layers
    resid = [f"blocks.{i}.hook_resid_pre" for i in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
    read_pos = _check_read_pos(req.read_pos, tuple(req.base.shape))
    names = list(dict.fromkeys(resid + list(site_names)))
    with model.capture_inputs() as inputs:
        base_logits, base = model.run_with_cache(req.base, names, attention_mask, read_pos=read_pos)
    source_logits, source = model.run_with_cache(
        req.source, list(site_names), attention_mask, read_pos=read_pos
    )
    batch, pos = req.base.shape
    chunk = req.chunk or default_chunk(model, batch, pos)
    prefix = None
    if positional and cache_kwarg(inputs) is not None:
        prefix = record(model, base["blocks.0.hook_resid_pre"], inputs)
    return Runs(
        model=model,
        metric=metric,
        inputs=inputs,
        base=base,
        source=source,
        base_logits=base_logits,
        base_metric=check_read(evaluate(metric, base_logits, batch), read_pos),
        source_metric=check_read(evaluate(metric, source_logits, batch), read_pos),
        chunk=chunk,
        prefix=prefix,
        read_pos=read_pos,
        scratch=None if read_pos is None else torch.full_like(base_logits, float("nan")),
    )


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
        h = suffix_resid(model, resid, start, runs.inputs, cache, p0)
    if runs.read_pos is None:
        logits = unembed(model, h)
        if p0:
            logits = torch.cat([runs.base_logits[:, :p0].repeat(v, 1, 1), logits], dim=1)
        return torch.stack(
            [evaluate(runs.metric, logits[i * b : (i + 1) * b], b) for i in range(v)]
        )
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
        out.append(evaluate(runs.metric, logits, b))
    return check_read(torch.stack(out), runs.read_pos)
