"""The histogram update's float32/int32 bin counting equals the int64 reference it replaced,
count for count, on random data with ties, values on bin edges, negative values, zeros, huge and
tiny ranges, several batches (coarsening), and the unit chunking."""

import pytest
import torch

from mechscope.neurons import histogram as H
from mechscope.neurons.histogram import empty_histogram, update_histogram


def _reference_update(h: H.Histogram, x: torch.Tensor) -> H.Histogram:
    """The update before the float32 counting (int64 index, one flat bincount)."""
    x = x.float().cpu()
    n_units, bins = h.counts.shape
    low, high = torch.aminmax(x, dim=0)
    lo, hi = torch.minimum(h.lo, low), torch.maximum(h.hi, high)
    exponent = H.fit_exponent(lo, hi, h.exponent, bins)
    offset = H._bin(lo, exponent)
    shift = exponent - h.exponent
    old = h.offset[:, None] + torch.arange(bins)
    moved = torch.div(old, (2**shift)[:, None], rounding_mode="floor") - offset[:, None]
    counts = torch.zeros_like(h.counts)
    counts.scatter_add_(1, moved.clamp(0, bins - 1), h.counts)
    flat = H._bin(x, exponent) - offset + torch.arange(n_units) * bins
    counts += torch.bincount(flat.flatten(), minlength=n_units * bins).view(n_units, bins)
    return H.Histogram(
        counts, exponent, offset, lo, hi, h.total + x.sum(0).double(),
        h.total_sq + (x * x).sum(0).double(), h.positive + (x > 0).sum(0), h.n + x.shape[0],
    )  # fmt: skip


def _batches(seed: int, n_units: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(n_units, generator=g) * 8
    out = []
    for i in range(4):
        x = torch.randn(40, n_units, generator=g) * scale * (i + 1)
        # ties and values exactly on power-of-two bin edges, at fine and coarse widths
        x[:8] = torch.randint(-6, 7, (8, n_units), generator=g).float() * 2.0 ** -(i + 2)
        x[8:12] = torch.randint(-3, 4, (4, n_units), generator=g).float() * 4.0
        x[12:16] = 0.0
        x[16] = -0.0
        x[17:20] = x[20:23]  # repeated rows
        x[23] = torch.randint(0, 2, (n_units,), generator=g).float() * 2.0**-16  # finest edges
        x[:, 0] = 0.0  # a dead unit
        x[:, 1] = 1.5  # a constant unit
        x[:, 2] *= 1e4  # a wide range
        x[:, 3] *= 1e-6  # a range below the finest width
        x[:, 5] = 1e6  # offsets far beyond 2**24 (float32 spacing 8192 there)
        x[:, 6] = 16384.0 + x[:, 6] * 2.0**-4  # large offset, fine width
        out.append(x)
    out.append(torch.relu(out[0]))  # mostly zeros, as an SAE latent
    return out


def _equal(a: H.Histogram, b: H.Histogram) -> bool:
    fields = ("counts", "exponent", "offset", "lo", "hi", "total", "total_sq", "positive")
    return a.n == b.n and all(torch.equal(getattr(a, f), getattr(b, f)) for f in fields)


@pytest.mark.parametrize("exact", [H._EXACT, 64 * 5])  # one chunk; chunks of 5 units
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_update_equals_reference(monkeypatch, seed, exact):
    monkeypatch.setattr(H, "_EXACT", exact)
    n_units = 23
    new = ref = empty_histogram(n_units, 64)
    for x in _batches(seed, n_units):
        new, ref = update_histogram(new, x), _reference_update(ref, x)
        assert _equal(new, ref)
    assert int(new.counts.sum()) == new.n * n_units


def test_counts_on_a_transposed_batch_and_few_bins():
    x = torch.tensor([[0.0, 1.0], [0.25, 1.0], [0.5, 3.0], [0.75, -1.0]])
    h = update_histogram(empty_histogram(2, 4), x.t().contiguous().t())  # non-contiguous rows
    assert _equal(h, _reference_update(empty_histogram(2, 4), x))
    assert h.counts.tolist() == [[1, 1, 1, 1], [1, 2, 1, 0]]  # width 2 from -2
