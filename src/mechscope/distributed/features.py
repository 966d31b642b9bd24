"""``mechscope features build`` over torchrun ranks: the one-process database, batch by batch.

1. rank 0 opens the database and stores the settings, the sources and the vocabulary
   (:func:`mechscope.features.build._start`); an error there is raised on every rank;
2. every rank walks the same deterministic window stream and scores batch ``i`` only when
   ``i % world == rank``, merging it into its own running states with the one-process update
   (``_update``: top-k, histogram, interval sample), with the windows' global numbers;
3. the states are mergeable: the top-k of a union is the top-k of the ranks' top-k (ranked by
   value, then window number, as one process ranks them); two histograms go onto the coarser of
   their power-of-two grids, where counts add; an interval sample keeps, per cell of the common
   grid, the smallest priorities of the ranks' cells. Rank 0 gathers and merges them in rank
   order; the float64 sums behind the means are added batch by batch in stream order (each
   round of ``world`` batches is all-gathered), so they are the one-process sums bit for bit;
4. rank 0 writes every feature (:func:`mechscope.features.finalize.finalize`).

Checkpoints: every ``checkpoint_rounds`` rounds (a round is ``world`` batches, one per rank)
rank 0 gathers every rank's packed state (the one-process checkpoint format, per rank) and writes
them with the stream-order sums and the progress into the database's ``build_state`` table in one
transaction, so a checkpoint holds every rank at the same round or nothing. After ``kill -9`` the
same command with the same number of processes loads it (each rank its own state), skips the
batches done and goes on: the database is the uninterrupted run's.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from mechscope.distributed import broadcast_error, from_main, init, rank, world_size
from mechscope.errors import MechscopeError
from mechscope.features.build import (
    BuildConfig,
    SourceState,
    _empty,
    _pack,
    _start,
    _stream,
    _unpack,
    _update,
)
from mechscope.features.db import FeatureDB, create_db
from mechscope.features.heads import carry_peaks, has_writes
from mechscope.features.sketch import EMPTY, Sketch, _cells, _fit, _old_max
from mechscope.features.sources import capture_sites, check_sources, parse_source
from mechscope.models.hooked import HookedModel
from mechscope.neurons.histogram import Histogram, _bin, fit_exponent
from mechscope.neurons.scan import JACOBIAN_WINDOWS, final_residuals
from mechscope.neurons.topk import merge_topk, window_order
from mechscope.progress import progress

__all__ = ["build_features", "merge_histogram", "merge_sketch", "merge_topk"]


def merge_histogram(a: Histogram, b: Histogram) -> Histogram:
    """Two histograms of disjoint values on the coarser common grid (counts add exactly)."""
    bins = a.counts.shape[1]
    lo, hi = torch.minimum(a.lo, b.lo), torch.maximum(a.hi, b.hi)
    exponent = fit_exponent(lo, hi, torch.maximum(a.exponent, b.exponent), bins)
    offset = torch.where(torch.isfinite(lo), _bin(lo.clamp(min=-3e38, max=3e38), exponent), 0)
    counts = torch.zeros_like(a.counts)
    for h in (a, b):
        old = h.offset[:, None] + torch.arange(bins)
        shift = (exponent - h.exponent)[:, None]
        moved = torch.div(old, 2**shift, rounding_mode="floor") - offset[:, None]
        counts.scatter_add_(1, moved.clamp(0, bins - 1), h.counts)
    return Histogram(
        counts=counts, exponent=exponent, offset=offset, lo=lo, hi=hi, total=a.total + b.total,
        total_sq=a.total_sq + b.total_sq, positive=a.positive + b.positive, n=a.n + b.n,
    )  # fmt: skip


def merge_sketch(a: Sketch, b: Sketch) -> Sketch:
    """Per cell of the common grid, the smallest priorities of two samples of disjoint windows."""
    exponent = _fit(torch.maximum(_old_max(a), _old_max(b)), torch.maximum(a.exponent, b.exponent), a.cells)  # fmt: skip
    prio = torch.cat([a.prio, b.prio], dim=1)
    values = torch.cat([a.values, b.values], dim=1)
    windows = torch.cat([a.windows, b.windows], dim=1)
    cell = _cells(values, exponent, a.cells)
    order = window_order(cell * 2**40 + prio.clamp(max=2**40 - 1), windows, descending=False)
    sorted_cell, sorted_prio = cell.gather(1, order), prio.gather(1, order)
    n_units, n = order.shape
    col = torch.arange(n).expand(n_units, n)
    first = torch.ones_like(sorted_cell, dtype=torch.bool)
    first[:, 1:] = sorted_cell[:, 1:] != sorted_cell[:, :-1]
    rank_in = col - torch.cummax(torch.where(first, col, torch.zeros_like(col)), dim=1).values
    inside = sorted_cell < a.cells
    keep = (rank_in < torch.where(inside, a.m, a.negatives)) & (sorted_prio < EMPTY)
    slots = a.prio.shape[1]
    target = torch.where(inside, sorted_cell * a.m + rank_in, a.cells * a.m + rank_in)
    target = torch.where(keep, target, torch.full_like(target, slots))
    dest = torch.full((n_units, slots + 1), n, dtype=torch.long)
    dest.scatter_(1, target, order)
    filled, src = dest[:, :slots] < n, dest[:, :slots].clamp(max=n - 1)

    def pick(x: torch.Tensor, y: torch.Tensor, empty: float | int) -> torch.Tensor:
        both = torch.cat([x, y], dim=1)
        idx = src if both.dim() == 2 else src[..., None].expand(-1, -1, both.shape[-1])
        mask = filled if both.dim() == 2 else filled[..., None]
        return torch.where(mask, both.gather(1, idx), torch.tensor(empty, dtype=both.dtype))

    return replace(
        a, prio=pick(a.prio, b.prio, EMPTY), values=pick(a.values, b.values, 0.0),
        windows=pick(a.windows, b.windows, -1), positions=pick(a.positions, b.positions, 0),
        acts=pick(a.acts, b.acts, 0.0), tokens=pick(a.tokens, b.tokens, 0), exponent=exponent,
    )  # fmt: skip


def _merge(a: SourceState, b: SourceState) -> SourceState:
    top = merge_topk(a.top, b.top)
    low = None if a.low is None or b.low is None else merge_topk(a.low, b.low, lowest=True)
    peaks = None  # attn:L: each top slot keeps its own peak output (mechscope.features.heads)
    if a.peaks is not None and b.peaks is not None:
        windows = torch.cat([a.top.windows, b.top.windows], dim=1)
        peaks = carry_peaks(top, windows, torch.cat([a.peaks, b.peaks], dim=1))
    sketch = merge_sketch(a.sketch, b.sketch)
    return SourceState(top, merge_histogram(a.hist, b.hist), sketch, low, peaks)


def _add_round(sums: list[torch.Tensor], mine: list[torch.Tensor | None]) -> None:
    """Add this round's per-batch sums [source] of [2 unit] to ``sums`` in stream order."""
    for j, own in enumerate(mine):
        parts = [torch.zeros_like(sums[j]) for _ in range(world_size())]
        dist.all_gather(parts, own if own is not None else torch.full_like(sums[j], torch.nan))
        for part in parts:  # rank r scored the round's r-th batch
            if not torch.isnan(part).all():
                sums[j] += part


def _save(db: FeatureDB | None, states: list[SourceState], sums: list[torch.Tensor],
          resid: torch.Tensor | None, done: dict[str, int]) -> None:  # fmt: skip
    """Every rank's state, gathered on rank 0 and written in one transaction."""
    gathered: list[Any] = [None] * world_size() if rank() == 0 else None  # type: ignore[assignment]
    dist.gather_object((_pack(states, resid), states[0].hist.n), gathered, dst=0)
    if db is None:
        return
    sums_blob = save_tensors({str(j): s for j, s in enumerate(sums)})
    info = {**done, "world": world_size(), "rank_n": [n for _, n in gathered]}
    rows = [("progress", json.dumps(info).encode()), ("sums", sums_blob)]
    rows += [(f"tensors.{r}", blob) for r, (blob, _) in enumerate(gathered)]
    with db.backend.transaction():
        db.backend.execute("DELETE FROM build_state")
        db.backend.executemany("INSERT INTO build_state (name, data) VALUES (?, ?)", rows)


def _read(db: FeatureDB) -> dict[str, bytes]:
    """The checkpoint rows of an unfinished build (empty for a new one), checked against the
    number of processes."""
    saved = {name: bytes(data) for name, data in db.backend.query("SELECT name, data FROM build_state")}  # fmt: skip
    if saved:
        was = json.loads(saved["progress"]).get("world", 1)
        if was != world_size():
            how = f"torchrun --nproc-per-node {was}" if was > 1 else "one process (no torchrun)"
            raise MechscopeError(
                f"{db.backend.where} holds a build checkpointed by {was} process(es); "
                f"resume it with {how}"
            )
    return saved


def _resume(saved: dict[str, bytes], states: list[SourceState], sums: list[torch.Tensor]) -> tuple:
    """Load this rank's state and the sums of a checkpoint; gives (resid, progress)."""
    if not saved:
        return None, {"batches": 0, "windows": 0, "n": 0}
    info = json.loads(saved["progress"])
    resid = _unpack(saved[f"tensors.{rank()}"], states, info["rank_n"][rank()])
    for j, s in load_tensors(saved["sums"]).items():
        sums[int(j)] = s
    return resid, {k: info[k] for k in ("batches", "windows", "n")}


def _score(model: HookedModel, cfg: BuildConfig, sources: list, quiet: bool, corpus: Any,
           saved: dict[str, bytes], db: FeatureDB | None, every: int) -> tuple:  # fmt: skip
    """This rank's states over its batches, the float64 sums in stream order, the progress and
    the batches done when it started (from a checkpoint)."""
    world, me = world_size(), rank()
    states = [_empty(s, cfg) for s in sources]
    sums = [torch.zeros((2, s.readout.n_units), dtype=torch.float64) for s in sources]
    start = 0 if cfg.include_first else 1
    sites = sorted({s.hook_name for s in sources})
    total = -(-cfg.n_tokens // (cfg.seq_len * cfg.batch_size))
    stream = progress(_stream(model, cfg, corpus), total=total, desc="features build", quiet=quiet or me > 0, unit="batch")  # fmt: skip
    resid, done = _resume(saved, states, sums)
    resumed = done["batches"]
    mine: list[torch.Tensor | None] = [None] * len(sources)
    for i, tokens in enumerate(stream):
        if i < done["batches"]:
            continue  # scored before the interruption: in the checkpoint
        if tokens.shape[1] <= start:
            raise MechscopeError("windows of one token have no position after the first")
        if i % world == me:
            if i == 0 and any(has_writes(s) for s in sources):
                resid = final_residuals(model, tokens[:JACOBIAN_WINDOWS], start)
            acts = capture_sites(model, sites, tokens)
            for j, (state, source) in enumerate(zip(states, sources, strict=True)):
                zero = torch.zeros_like(state.hist.total)
                kept = state.hist
                state.hist = replace(kept, total=zero, total_sq=zero)  # this batch's sums alone
                _update(state, source, acts[source.hook_name], tokens, done["windows"], start)
                mine[j] = torch.stack([state.hist.total, state.hist.total_sq])
                state.hist = replace(state.hist, total=kept.total, total_sq=kept.total_sq)
        done = {"batches": i + 1, "windows": done["windows"] + len(tokens),
                "n": done["n"] + len(tokens) * (tokens.shape[1] - start)}  # fmt: skip
        if i % world == world - 1:
            _add_round(sums, mine)
            mine = [None] * len(sources)
            if every and (i + 1) // world % every == 0:
                _save(db, states, sums, resid, done)
    if done["batches"] % world:
        _add_round(sums, mine)
    return states, sums, resid, done, resumed


def build_features(
    model: HookedModel,
    cfg: BuildConfig,
    out: str,
    *,
    checkpoint_rounds: int = 50,
    quiet: bool = True,
    corpus: Any = None,
) -> dict[str, Any]:
    """:func:`mechscope.features.build.build_features` spread over torchrun's ranks (the same
    database), checkpointed every ``checkpoint_rounds`` rounds (0: never); with one process it
    is that function. The summary's ``resumed`` is the number of batches a checkpoint held."""
    from mechscope.features.build import build_features as build_one
    from mechscope.features.finalize import finalize

    if not init():
        return build_one(model, cfg, out, quiet=quiet, corpus=corpus)
    began = time.perf_counter()
    sources = [parse_source(model, s) for s in cfg.sources]
    check_sources(model, sources)
    held: dict[str, Any] = {}

    def open_db() -> str:
        held["db"] = create_db(out)
        return _start(held["db"], model, sources, cfg)

    status = from_main(open_db)
    summary = {"status": status, "sources": [s.name for s in sources]}
    if status == "complete":
        if "db" in held:
            held["db"].close()
        return {**summary, "windows": None, "tokens": 0, "seconds": 0.0}
    saved = from_main(lambda: _read(held["db"]))
    error, result = None, None
    try:
        states, sums, resid, done, resumed = _score(model, cfg, sources, quiet, corpus, saved,
                                           held.get("db"), checkpoint_rounds)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - raised on every rank
        error = exc
    broadcast_error(error)
    gathered: list[Any] = [None] * world_size() if rank() == 0 else None  # type: ignore[assignment]
    dist.gather_object((states, resid), gathered, dst=0)
    if rank() == 0:
        with held["db"] as db:
            try:
                if not done["windows"]:
                    raise MechscopeError("no tokens to build from; the corpus gave no window")
                merged = gathered[0][0]
                for other, _ in gathered[1:]:
                    merged = [_merge(a, b) for a, b in zip(merged, other, strict=True)]
                for state, total in zip(merged, sums, strict=True):
                    state.hist = replace(state.hist, total=total[0], total_sq=total[1])
                finalize(db, model, sources, merged, gathered[0][1], cfg, done)
                db.backend.compact()
            except Exception as exc:  # noqa: BLE001 - raised on every rank
                error = exc
    broadcast_error(error)
    result = {**summary, "status": "complete", "tokens": done["windows"] * cfg.seq_len,
              "windows": done["windows"], "seconds": time.perf_counter() - began,
              "resumed": resumed}  # fmt: skip
    return result
