"""The end of a build: every feature's row, examples, logit table and neighbours, in one transaction.

- statistics and the histogram come from :mod:`mechscope.neurons.histogram` (trimmed to the
  occupied bins);
- the logit table is :func:`mechscope.neurons.logit_effects` of the source's write vectors through
  the final norm's Jacobian averaged over the first batch's final residual streams (the same
  linearisation as ``mechscope neurons``);
- neighbours are the ``n_neighbours`` other features of the source with the largest cosine between
  write (decoder) directions;
- ``peak_tokens`` counts, per feature, the tokens its top examples peak on.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import torch

from mechscope.features.db import FeatureDB, floats_blob, ints_blob
from mechscope.features.sketch import EMPTY
from mechscope.features.sources import Source
from mechscope.models.hooked import HookedModel
from mechscope.neurons.histogram import Histogram
from mechscope.neurons.logits import logit_effects, norm_jacobian

__all__ = ["finalize", "histogram_json", "neighbours"]

CHUNK = 1024


def histogram_json(h: Histogram, i: int) -> dict[str, list]:
    counts = h.counts[i]
    used = counts.nonzero().flatten()
    if not len(used):
        return {"edges": [], "counts": []}
    first, last = int(used.min()), int(used.max())
    return {"edges": h.edges(i)[first : last + 2].tolist(), "counts": counts[first : last + 1].tolist()}  # fmt: skip


def neighbours(writes: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[unit n] the positions of the ``n`` other rows of ``writes`` with the largest cosine, and
    the cosines (best first)."""
    unit = torch.nn.functional.normalize(writes.float(), dim=-1)
    n = min(n, len(unit) - 1)
    idx, val = [], []
    for a in range(0, len(unit), CHUNK):
        cos = unit[a : a + CHUNK] @ unit.T  # [chunk unit]
        rows = torch.arange(a, min(a + CHUNK, len(unit)))
        cos[torch.arange(len(rows)), rows] = float("-inf")  # not itself
        top = cos.topk(n, dim=-1) if n > 0 else None
        idx.append(top.indices if top else torch.zeros((len(rows), 0), dtype=torch.long))
        val.append(top.values if top else torch.zeros((len(rows), 0)))
    return torch.cat(idx), torch.cat(val)


def _logits(db: FeatureDB, model: HookedModel, source: Source, resid: Any, k: int) -> list[dict]:
    writes = source.readout.writes
    n = source.readout.n_units
    if writes is None:
        return [{"promotes": [], "suppresses": []} for _ in range(n)]
    jacobian = None if resid is None else norm_jacobian(model, resid)
    fx = logit_effects(model, writes, k, jacobian=jacobian)

    def rows(ids: torch.Tensor, values: torch.Tensor) -> list[dict[str, Any]]:
        names = db.tokens(ids.tolist())
        return [{"id": int(i), "token": t, "value": float(v)} for i, t, v in zip(ids.tolist(), names, values.tolist(), strict=True)]  # fmt: skip

    return [
        {"promotes": rows(fx.promote_ids[u], fx.promote_values[u]),
         "suppresses": rows(fx.suppress_ids[u], fx.suppress_values[u])}
        for u in range(n)
    ]  # fmt: skip


def _example_rows(name: str, state: Any, u: int, index: int) -> list[tuple]:
    out = []
    t, s = state.top, state.sketch
    for slot in range(t.k):
        if int(t.windows[u, slot]) < 0:
            break
        out.append((name, index, "top", slot, float(t.values[u, slot]), int(t.positions[u, slot]),
                    int(t.windows[u, slot]), None, None, ints_blob(t.tokens[u, slot].numpy()),
                    floats_blob(t.acts[u, slot].numpy())))  # fmt: skip
    width = 2.0 ** int(s.exponent[u])
    counters = {"quantile": 0, "negative": 0}
    for slot in range(s.prio.shape[1]):
        if int(s.prio[u, slot]) >= EMPTY:
            continue
        cell = s.cell_of(slot)
        kind = "quantile" if cell < s.cells else "negative"
        lo, hi = (cell * width, (cell + 1) * width) if kind == "quantile" else (None, None)
        out.append((name, index, kind, counters[kind], float(s.values[u, slot]),
                    int(s.positions[u, slot]), int(s.windows[u, slot]), lo, hi,
                    ints_blob(s.tokens[u, slot].numpy()), floats_blob(s.acts[u, slot].numpy())))  # fmt: skip
        counters[kind] += 1
    return out


def _write_source(db: FeatureDB, model: HookedModel, source: Source, state: Any, resid: Any,
                  cfg: Any) -> None:  # fmt: skip
    h = state.hist
    mean, std, density = h.mean(), h.std(), h.density()
    logits = _logits(db, model, source, resid, cfg.n_logit_tokens)
    near = None
    if source.readout.writes is not None and cfg.n_neighbours:
        near = neighbours(source.readout.writes, cfg.n_neighbours)
    units = source.readout.units
    feature_rows, example_rows, peaks = [], [], []
    for u, index in enumerate(units):
        nb = [] if near is None else [
            {"index": units[int(j)], "cosine": float(c)} for j, c in zip(near[0][u], near[1][u], strict=True)
        ]  # fmt: skip
        feature_rows.append((source.name, index, float(h.hi[u]), float(h.lo[u]), float(mean[u]),
                             float(std[u]), float(density[u]), json.dumps(histogram_json(h, u)),
                             json.dumps(logits[u]), json.dumps(nb)))  # fmt: skip
        example_rows += _example_rows(source.name, state, u, index)
        top = state.top
        hits = Counter(
            int(top.tokens[u, slot, top.positions[u, slot]])
            for slot in range(top.k)
            if int(top.windows[u, slot]) >= 0
        )
        peaks += [(tok, source.name, index, n) for tok, n in hits.items()]
    b = db.backend
    b.execute("DELETE FROM features WHERE source = ?", [source.name])
    b.execute("DELETE FROM examples WHERE source = ?", [source.name])
    b.execute("DELETE FROM peak_tokens WHERE source = ?", [source.name])
    b.executemany("INSERT INTO features (source, idx, maximum, minimum, mean, std, density, histogram, logits, neighbours) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", feature_rows)  # fmt: skip
    b.executemany("INSERT INTO examples (source, idx, kind, slot, value, position, win, lo, hi, token_ids, acts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", example_rows)  # fmt: skip
    b.executemany("INSERT INTO peak_tokens (token_id, source, idx, hits) VALUES (?, ?, ?, ?)", peaks)  # fmt: skip


def finalize(db: FeatureDB, model: HookedModel, sources: list[Source], states: list[Any],
             resid: Any, cfg: Any, done: dict[str, int]) -> None:  # fmt: skip
    """Write every source's features and mark the build complete, all in one transaction."""
    b = db.backend
    with b.transaction():
        for source, state in zip(sources, states, strict=True):
            _write_source(db, model, source, state, resid, cfg)
        b.execute("UPDATE meta SET value = ? WHERE key = 'status'", ["complete"])
        b.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [
                ("windows", str(done["windows"])),
                ("tokens_read", str(done["windows"] * cfg.seq_len)),
            ],  # fmt: skip
        )
        b.execute("DELETE FROM build_state")
