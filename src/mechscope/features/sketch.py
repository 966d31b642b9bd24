"""Examples from activation intervals and non-activating examples, in one streaming pass.

SAEDashboard shows, beside the top examples, random windows whose activation falls in each of
several intervals between 0 and the maximum, and autointerp needs random windows where the
feature does not fire at all. Neither the maximum nor the intervals are known until the pass
ends, so the state is a mergeable sample:

1. every window gets a pseudo-random priority per unit, a fixed hash of (window number, unit), so
   the ``m`` windows of smallest priority in any set are a uniform random sample of it;
2. a window whose maximum ``v`` (positions ``start:``) is above zero goes to cell
   ``floor(v / 2**e)`` of a grid anchored at zero, with ``e`` the smallest exponent (at least
   ``2**-16``) at which the largest maximum seen so far fits in ``cells`` cells; a window with
   ``v <= 0`` goes to the negative cell;
3. each cell keeps its ``m`` smallest priorities (``negatives`` for the negative cell). When ``e``
   grows, two neighbouring cells merge and keep the smallest ``m`` of their union, which is exactly
   the smallest ``m`` of all windows now in the merged cell.

So at the end, cell ``j`` holds a uniform random sample (without replacement) of the windows
whose maximum lies in ``[j 2**e, (j+1) 2**e)``, the same whatever the batch sizes, and the negative
cell a uniform sample of the windows where the unit never rises above zero. Memory: ``unit *
(cells * m + negatives) * seq_len`` activations and token ids (8 bytes per slot).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mechscope.neurons.histogram import MIN_EXPONENT

Tensor = torch.Tensor

__all__ = ["Sketch", "empty_sketch", "priorities", "update_sketch"]

EMPTY = 2**62  # the priority of an empty slot
_MASK = (1 << 64) - 1


@dataclass(frozen=True, eq=False)
class Sketch:
    """Per unit, ``cells * m`` interval slots then ``negatives`` negative slots."""

    prio: Tensor  # [unit slot] int64, EMPTY when the slot is free
    values: Tensor  # [unit slot] float32: the window's maximum
    windows: Tensor  # [unit slot] int64
    positions: Tensor  # [unit slot] int64
    acts: Tensor  # [unit slot seq_len] float32
    tokens: Tensor  # [unit slot seq_len] int32
    exponent: Tensor  # [unit] int64: cell width 2**exponent
    cells: int
    m: int
    negatives: int

    def cell_of(self, slot: int) -> int:
        """The cell of a slot (``cells`` for the negative ones)."""
        return min(slot // self.m, self.cells) if self.m else self.cells


def empty_sketch(n_units: int, seq_len: int, cells: int, m: int, negatives: int) -> Sketch:
    slots = cells * m + negatives
    return Sketch(
        prio=torch.full((n_units, slots), EMPTY, dtype=torch.long),
        values=torch.zeros((n_units, slots)),
        windows=torch.full((n_units, slots), -1, dtype=torch.long),
        positions=torch.zeros((n_units, slots), dtype=torch.long),
        acts=torch.zeros((n_units, slots, seq_len)),
        tokens=torch.zeros((n_units, slots, seq_len), dtype=torch.int32),
        exponent=torch.full((n_units,), MIN_EXPONENT, dtype=torch.long),
        cells=cells,
        m=m,
        negatives=negatives,
    )


def priorities(windows: Tensor, units: Tensor) -> Tensor:
    """[window unit] a 31-bit hash of each (window number, unit) pair (splitmix64 finaliser)."""
    w = windows.numpy().astype(np.uint64)[:, None]
    u = units.numpy().astype(np.uint64)[None, :]
    with np.errstate(over="ignore"):
        x = w * np.uint64(0x9E3779B97F4A7C15) + (u + np.uint64(1)) * np.uint64(0xD1B54A32D192ED03)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return torch.from_numpy((x >> np.uint64(33)).astype(np.int64))


def _cells(values: Tensor, exponent: Tensor, cells: int) -> Tensor:
    """Cell of each window maximum [unit n] (``cells`` for values <= 0)."""
    scaled = torch.floor(values.float() * torch.pow(2.0, -exponent.float())[:, None]).long()
    return torch.where(values > 0, scaled.clamp(max=cells - 1), torch.full_like(scaled, cells))


def _fit(hi: Tensor, start: Tensor, cells: int) -> Tensor:
    """The smallest exponent >= ``start`` at which ``hi`` [unit] lies in the first ``cells``."""
    guess = torch.floor(torch.log2(hi.double().clamp(min=1e-300) / cells)).long()
    e = torch.where(hi > 0, torch.maximum(start, guess), start)
    while True:
        over = (hi > 0) & (torch.floor(hi.float() * torch.pow(2.0, -e.float())) >= cells)
        if not over.any():
            return e
        e = e + over.long()


def update_sketch(
    s: Sketch, acts: Tensor, tokens: Tensor, first_window: int, units: Tensor, start: int = 1
) -> Sketch:
    """Merge a batch: ``acts`` [batch pos unit] of windows ``tokens`` [batch pos] numbered from
    ``first_window``; ``units`` [unit] are the units' indices (they seed the priorities). The
    windows' rows of ``s`` are updated in place and shared with the result."""
    batch, seq_len, n_units = acts.shape
    best, where = acts[:, start:].max(dim=1)  # [batch unit]
    numbers = torch.arange(first_window, first_window + batch)
    exponent = _fit(torch.maximum(best.max(0).values, _old_max(s)), s.exponent, s.cells)
    prio = torch.cat([s.prio, priorities(numbers, units).T], dim=1)  # [unit slot+batch]
    values = torch.cat([s.values, best.T], dim=1)
    cell = _cells(values, exponent, s.cells)
    key = cell * 2**40 + prio.clamp(max=2**40 - 1)  # cell first, then priority
    order = torch.sort(key, dim=1, stable=True).indices
    sorted_cell = cell.gather(1, order)
    n = order.shape[1]
    col = torch.arange(n).expand(n_units, n)
    first = torch.ones_like(sorted_cell, dtype=torch.bool)
    first[:, 1:] = sorted_cell[:, 1:] != sorted_cell[:, :-1]
    rank = col - torch.cummax(torch.where(first, col, torch.zeros_like(col)), dim=1).values
    cap = torch.where(sorted_cell < s.cells, s.m, s.negatives)
    keep = (rank < cap) & (prio.gather(1, order) < EMPTY)
    slots = s.prio.shape[1]
    target = torch.where(sorted_cell < s.cells, sorted_cell * s.m + rank, s.cells * s.m + rank)
    target = torch.where(keep, target, torch.full_like(target, slots))  # the rest: a spare slot
    dest = torch.full((n_units, slots + 1), n, dtype=torch.long)  # n = "no source" (empty)
    dest.scatter_(1, target, order)
    dest = dest[:, :slots]
    filled = dest < n
    src = dest.clamp(max=n - 1)
    windows = torch.cat([s.windows, numbers.expand(n_units, batch)], dim=1)
    positions = torch.cat([s.positions, (where + start).T], dim=1)
    acts_out, tokens_out = _move_rows(s, src, filled, acts, tokens)
    return Sketch(
        prio=torch.where(filled, prio.gather(1, src), EMPTY),
        values=torch.where(filled, values.gather(1, src), 0.0),
        windows=torch.where(filled, windows.gather(1, src), -1),
        positions=torch.where(filled, positions.gather(1, src), 0),
        acts=acts_out,
        tokens=tokens_out,
        exponent=exponent,
        cells=s.cells,
        m=s.m,
        negatives=s.negatives,
    )


def _move_rows(
    s: Sketch, src: Tensor, filled: Tensor, acts: Tensor, tokens: Tensor
) -> tuple[Tensor, Tensor]:
    """The windows' rows after the merge: slot j of a unit takes candidate ``src[unit, j]`` (old
    slots first, then the batch's windows). Only units whose slots changed are gathered (late in a
    pass most batches change few of them), in place: the old state's rows are reused."""
    slots = s.prio.shape[1]
    moved = filled & (src != torch.arange(slots))
    emptied = ~filled & (s.prio < EMPTY)
    idx = (moved | emptied).any(1).nonzero().flatten()
    out_acts, out_tokens = s.acts, s.tokens
    if not len(idx):
        return out_acts, out_tokens
    batch, seq_len = tokens.shape
    rows = src[idx][..., None].expand(-1, -1, seq_len)  # [changed slot seq]
    cand_acts = torch.cat([s.acts[idx], acts.permute(2, 0, 1)[idx]], dim=1)
    cand_tokens = torch.cat([s.tokens[idx], tokens.to(torch.int32).expand(len(idx), batch, seq_len)], dim=1)  # fmt: skip
    f = filled[idx][..., None]
    out_acts[idx] = torch.where(f, cand_acts.gather(1, rows), 0.0)
    out_tokens[idx] = torch.where(f, cand_tokens.gather(1, rows), 0)
    return out_acts, out_tokens


def _old_max(s: Sketch) -> Tensor:
    kept = torch.where(s.prio < EMPTY, s.values, torch.full_like(s.values, float("-inf")))
    return kept.max(1).values if kept.shape[1] else torch.full((kept.shape[0],), float("-inf"))
