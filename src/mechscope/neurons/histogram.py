"""Streaming per-unit activation histograms whose bins adapt to the data yet stay exact.

Each unit has ``bins`` bins of width ``2**exponent`` on a grid anchored at zero: bin ``j`` holds
``[(offset + j) w, (offset + j + 1) w)``. When a batch falls outside the current bins the width
doubles (two neighbours merge exactly, since every edge of the finer grid is an edge of the
coarser one) until the range seen so far fits. The final width is therefore the smallest power of
two (at least ``2**MIN_EXPONENT``) at which all the data fits in ``bins`` bins, and the counts equal
a histogram of all values computed at once on that grid, whatever the batch sizes. Division by a
power of two is exact in floating point, so bin assignment is exact too.

The state also keeps running sums for the mean and standard deviation and the fraction of values
above zero (density). Memory: ``unit * bins`` int64 counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor

__all__ = ["MIN_EXPONENT", "Histogram", "empty_histogram", "fit_exponent", "update_histogram"]

MIN_EXPONENT = -16  # the finest bin width, 2**-16
_EXACT = 2**24  # float32 holds every integer below this exactly


@dataclass(frozen=True, eq=False)
class Histogram:
    """Per-unit counts on a power-of-two grid and running moments."""

    counts: Tensor  # [unit bins] int64
    exponent: Tensor  # [unit] int64: bin width 2**exponent
    offset: Tensor  # [unit] int64: the first bin starts at offset * width
    lo: Tensor  # [unit] float32: smallest value seen (+inf before any)
    hi: Tensor  # [unit] float32: largest value seen (-inf before any)
    total: Tensor  # [unit] float64: sum of values
    total_sq: Tensor  # [unit] float64: sum of squares
    positive: Tensor  # [unit] int64: values > 0
    n: int  # values seen per unit

    def edges(self, unit: int) -> Tensor:
        """Bin edges [bins + 1] of one unit (float64)."""
        width = 2.0 ** int(self.exponent[unit])
        start = int(self.offset[unit])
        return torch.arange(start, start + self.counts.shape[1] + 1, dtype=torch.float64) * width

    def mean(self) -> Tensor:
        return self.total / max(self.n, 1)

    def std(self) -> Tensor:
        mean = self.mean()
        return (self.total_sq / max(self.n, 1) - mean**2).clamp(min=0).sqrt()

    def density(self) -> Tensor:
        return self.positive.double() / max(self.n, 1)


def empty_histogram(n_units: int, bins: int = 64) -> Histogram:
    return Histogram(
        counts=torch.zeros((n_units, bins), dtype=torch.long),
        exponent=torch.full((n_units,), MIN_EXPONENT, dtype=torch.long),
        offset=torch.zeros(n_units, dtype=torch.long),
        lo=torch.full((n_units,), float("inf")),
        hi=torch.full((n_units,), float("-inf")),
        total=torch.zeros(n_units, dtype=torch.float64),
        total_sq=torch.zeros(n_units, dtype=torch.float64),
        positive=torch.zeros(n_units, dtype=torch.long),
        n=0,
    )


def _bin(x: Tensor, exponent: Tensor) -> Tensor:
    """The absolute bin index ``floor(x / 2**exponent)``, x [... unit] (a power-of-two scaling of
    a float32 is exact, and so is floor)."""
    return torch.floor(x.float() * torch.pow(2.0, -exponent.float())).long()


def fit_exponent(lo: Tensor, hi: Tensor, start: Tensor, bins: int) -> Tensor:
    """The smallest exponent >= ``start`` per unit at which ``[lo, hi]`` fits in ``bins`` bins."""
    # below log2(range / (bins + 1)) nothing fits: start there rather than one step at a time
    span = (hi - lo).double().clamp(min=1e-300) / (bins + 1)
    exponent = torch.maximum(start, torch.floor(torch.log2(span)).long())
    while True:
        short = (_bin(hi, exponent) - _bin(lo, exponent)) >= bins
        if not short.any():
            return exponent
        exponent = exponent + short.long()


def _count(x: Tensor, exponent: Tensor, offset: Tensor, bins: int) -> Tensor:
    """Counts [unit bins] of x [n unit] on each unit's grid, as one flat bincount over
    ``unit * bins + bin`` per chunk of units.

    The index is computed in float32, in place, and counted as int32 (a third of the int64
    memory traffic of ``_bin``). Every step is exact: ``x * 2**-e`` and floor as in ``_bin``;
    ``floor - offset`` and ``+ unit * bins`` have an integer result below ``_EXACT`` = 2**24, which
    float32 represents, and IEEE subtraction and addition return a representable result exactly.
    """
    if bins > _EXACT:
        raise ValueError(f"{bins} histogram bins is too many; use at most {_EXACT}")
    n_units = x.shape[1]
    scale = torch.pow(2.0, -exponent.float())
    start_f = offset.float()  # offset = floor(lo * scale) is a float32 value: exact
    chunk = max(1, _EXACT // bins)
    parts = []
    for a in range(0, n_units, chunk):
        b = min(a + chunk, n_units)
        y = torch.mul(x[:, a:b], scale[a:b])
        y.floor_()
        y.sub_(start_f[a:b])
        y.add_(torch.arange(b - a, dtype=torch.float32) * bins)
        flat = y.reshape(-1).to(torch.int32)  # any order: the index names the unit
        parts.append(torch.bincount(flat, minlength=(b - a) * bins).view(b - a, bins))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def update_histogram(h: Histogram, x: Tensor) -> Histogram:
    """Add values ``x`` [n unit] (every row one token)."""
    x = x.float().cpu()
    n_units, bins = h.counts.shape
    low, high = torch.aminmax(x, dim=0)
    lo, hi = torch.minimum(h.lo, low), torch.maximum(h.hi, high)
    exponent = fit_exponent(lo, hi, h.exponent, bins)
    offset = _bin(lo, exponent)
    # move the old counts onto the coarser grid: absolute bin a -> floor(a / 2**shift)
    shift = exponent - h.exponent
    old = h.offset[:, None] + torch.arange(bins)
    moved = torch.div(old, (2**shift)[:, None], rounding_mode="floor") - offset[:, None]
    counts = torch.zeros_like(h.counts)
    counts.scatter_add_(1, moved.clamp(0, bins - 1), h.counts)  # empty bins may clamp: they add 0
    counts += _count(x, exponent, offset, bins)
    return Histogram(
        counts=counts,
        exponent=exponent,
        offset=offset,
        lo=lo,
        hi=hi,
        total=h.total + x.sum(0).double(),  # float32 within a batch, float64 across batches
        total_sq=h.total_sq + (x * x).sum(0).double(),
        positive=h.positive + (x > 0).sum(0),
        n=h.n + x.shape[0],
    )
