"""The interval / negative sample equals a brute-force choice, whatever the batch sizes."""

from __future__ import annotations

import pytest
import torch

from mechscope.features.sketch import EMPTY, empty_sketch, priorities, update_sketch


def brute(acts: torch.Tensor, cells: int, m: int, negatives: int, start: int = 1):
    """Per unit: {cell: sorted windows} of the m smallest priorities per cell."""
    best = acts[:, start:].max(1).values  # [window unit]
    n_win, n_units = best.shape
    prio = priorities(torch.arange(n_win), torch.arange(n_units))
    out = []
    for u in range(n_units):
        hi = float(best[:, u].max())
        e = -16
        while hi > 0 and hi / 2.0**e >= cells:
            e += 1
        chosen: dict[int, list[int]] = {}
        for w in range(n_win):
            v = float(best[w, u])
            cell = min(int(v // 2.0**e), cells - 1) if v > 0 else cells
            chosen.setdefault(cell, []).append(w)
        kept = {}
        for cell, ws in chosen.items():
            cap = m if cell < cells else negatives
            ranked = sorted(ws, key=lambda w: (int(prio[w, u]), w))[:cap]
            if ranked:
                kept[cell] = sorted(ranked)
        out.append((e, kept))
    return out


def sketched(acts, tokens, cells, m, negatives, batch):
    s = empty_sketch(acts.shape[-1], acts.shape[1], cells, m, negatives)
    for a in range(0, len(acts), batch):
        s = update_sketch(s, acts[a : a + batch], tokens[a : a + batch], a, torch.arange(acts.shape[-1]))  # fmt: skip
    return s


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_sketch_equals_brute_force(batch: int) -> None:
    g = torch.Generator().manual_seed(0)
    n_win, seq, units = 64, 6, 5
    scale = torch.tensor([0.5, 3.0, 40.0, 1e-6, 1.0])  # a tiny unit stays at the finest grid
    acts = torch.randn(n_win, seq, units, generator=g) * scale - torch.tensor([0, 0, 0, 0, 2.5])
    tokens = torch.randint(0, 50, (n_win, seq), generator=g)
    s = sketched(acts, tokens, 4, 3, 2, batch)
    for u, (e, kept) in enumerate(brute(acts, 4, 3, 2)):
        assert int(s.exponent[u]) == e
        got: dict[int, list[int]] = {}
        for slot in range(s.prio.shape[1]):
            if int(s.prio[u, slot]) < EMPTY:
                got.setdefault(s.cell_of(slot), []).append(int(s.windows[u, slot]))
                w = int(s.windows[u, slot])
                assert torch.equal(s.acts[u, slot], acts[w, :, u])
                assert torch.equal(s.tokens[u, slot], tokens[w].int())
        assert {c: sorted(ws) for c, ws in got.items()} == kept


def test_priorities_look_uniform() -> None:
    p = priorities(torch.arange(20000), torch.arange(3)).double() / 2**31
    assert p.min() >= 0 and p.max() < 1
    assert abs(float(p.mean()) - 0.5) < 0.01
    assert abs(float(torch.corrcoef(p.T)[0, 1])) < 0.03  # units are sampled independently
