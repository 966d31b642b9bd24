"""The end of a build: every feature's row, examples, logit table and neighbours, in one transaction.

- statistics and the histogram come from :mod:`mechscope.neurons.histogram` (trimmed to the
  occupied bins);
- the logit table is :func:`mechscope.neurons.logit_effects` of the source's write vectors through
  the final norm's Jacobian averaged over the first batch's final residual streams (the same
  linearisation as ``mechscope neurons``);
- neighbours are the ``n_neighbours`` other features of the source with the largest cosine between
  write (decoder) directions; an ``attn:L`` head's write is its mean peak output per unit of norm
  (:mod:`.heads`), and its negatives are its quietest windows;
- the Jacobian is computed once per build and shared by every source;
- ``peak_tokens`` counts, per feature, the tokens its top examples peak on.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np
import torch

from mechscope.features.db import FeatureDB, floats_blob, ints_blob
from mechscope.features.heads import has_writes, head_writes
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


def _logits(db: FeatureDB, model: HookedModel, writes: Any, n: int, jacobian: Any,
            k: int) -> list[dict]:  # fmt: skip
    if writes is None:
        return [{"promotes": [], "suppresses": []} for _ in range(n)]
    fx = logit_effects(model, writes, k, jacobian=jacobian)
    vocab = db.vocab()

    def rows(ids: list[int], values: list[float]) -> list[dict[str, Any]]:
        return [{"id": i, "token": vocab.get(i, f"<{i}>"), "value": v} for i, v in zip(ids, values, strict=True)]  # fmt: skip

    up_ids, up_values = fx.promote_ids.tolist(), fx.promote_values.tolist()
    down_ids, down_values = fx.suppress_ids.tolist(), fx.suppress_values.tolist()
    return [
        {"promotes": rows(up_ids[u], up_values[u]), "suppresses": rows(down_ids[u], down_values[u])}
        for u in range(n)
    ]


class _Rows:
    """One source's state as Python lists and byte strings, read once: per-row tensor indexing
    would dominate the end of a build."""

    def __init__(self, t: Any, s: Any) -> None:
        self.t_values, self.t_windows = t.values.tolist(), t.windows.tolist()
        self.t_positions = t.positions.tolist()
        self.t_tokens, self.t_acts = _blobs(t.tokens, "<i4"), _blobs(t.acts, "<f4")
        peak = t.tokens.gather(2, t.positions[..., None]).squeeze(-1)  # [unit k]
        self.t_peaks = peak.tolist()
        self.s_prio, self.s_values = s.prio.tolist(), s.values.tolist()
        self.s_windows, self.s_positions = s.windows.tolist(), s.positions.tolist()
        self.s_tokens, self.s_acts = _blobs(s.tokens, "<i4"), _blobs(s.acts, "<f4")
        self.s_exponent = s.exponent.tolist()


def _blobs(x: torch.Tensor, dtype: str) -> list[list[bytes]]:
    """[unit slot] the little-endian bytes of each row x[unit, slot] (as ``ints_blob`` /
    ``floats_blob`` give them)."""
    data = np.ascontiguousarray(x.numpy(), dtype=dtype)
    units, slots, width = data.shape
    raw, step = data.tobytes(), width * data.itemsize
    return [[raw[(u * slots + j) * step : (u * slots + j + 1) * step] for j in range(slots)] for u in range(units)]  # fmt: skip


def _example_rows(name: str, state: Any, r: _Rows, u: int, index: int) -> list[tuple]:
    out = []
    s = state.sketch
    windows = r.t_windows[u]
    for slot in range(len(windows)):
        if windows[slot] < 0:
            break
        out.append((name, index, "top", slot, r.t_values[u][slot], r.t_positions[u][slot],
                    windows[slot], None, None, r.t_tokens[u][slot], r.t_acts[u][slot]))  # fmt: skip
    width = 2.0 ** r.s_exponent[u]
    counters = {"quantile": 0, "negative": 0}
    for slot, prio in enumerate(r.s_prio[u]):
        if prio >= EMPTY:
            continue
        cell = s.cell_of(slot)
        kind = "quantile" if cell < s.cells else "negative"
        lo, hi = (cell * width, (cell + 1) * width) if kind == "quantile" else (None, None)
        out.append((name, index, kind, counters[kind], r.s_values[u][slot], r.s_positions[u][slot],
                    r.s_windows[u][slot], lo, hi, r.s_tokens[u][slot], r.s_acts[u][slot]))  # fmt: skip
        counters[kind] += 1
    low = state.low  # attn:L: the quietest windows (.heads)
    for slot in range(0 if low is None else low.k):
        if int(low.windows[u, slot]) < 0:
            break
        out.append((name, index, "negative", slot, float(low.values[u, slot]),
                    int(low.positions[u, slot]), int(low.windows[u, slot]), None, None,
                    ints_blob(low.tokens[u, slot].numpy()), floats_blob(low.acts[u, slot].numpy())))  # fmt: skip
    return out


def _write_source(db: FeatureDB, model: HookedModel, source: Source, state: Any, jacobian: Any,
                  cfg: Any) -> None:  # fmt: skip
    h = state.hist
    mean, std, density = h.mean().tolist(), h.std().tolist(), h.density().tolist()
    hi, lo = h.hi.tolist(), h.lo.tolist()
    writes, units = source.readout.writes, source.readout.units
    if state.peaks is not None:  # attn:L (.heads)
        heads = torch.tensor(units)
        writes = head_writes(model, source.config["layer"], heads, state.top, state.peaks)
    logits = _logits(db, model, writes, len(units), jacobian, cfg.n_logit_tokens)
    near = None
    if writes is not None and cfg.n_neighbours:
        near = [x.tolist() for x in neighbours(writes, cfg.n_neighbours)]
    r = _Rows(state.top, state.sketch)
    feature_rows, example_rows, peaks = [], [], []
    for u, index in enumerate(units):
        nb = [] if near is None else [
            {"index": units[j], "cosine": c} for j, c in zip(near[0][u], near[1][u], strict=True)
        ]  # fmt: skip
        feature_rows.append((source.name, index, hi[u], lo[u], mean[u], std[u], density[u],
                             json.dumps(histogram_json(h, u)), json.dumps(logits[u]),
                             json.dumps(nb)))  # fmt: skip
        example_rows += _example_rows(source.name, state, r, u, index)
        hits = Counter(p for p, w in zip(r.t_peaks[u], r.t_windows[u], strict=True) if w >= 0)
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
    needs = resid is not None and any(has_writes(s) for s in sources)
    jacobian = norm_jacobian(model, resid) if needs else None  # once: every source shares it
    with b.transaction():
        for source, state in zip(sources, states, strict=True):
            _write_source(db, model, source, state, jacobian, cfg)
        b.execute("UPDATE meta SET value = ? WHERE key = 'status'", ["complete"])
        b.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [
                ("windows", str(done["windows"])),
                ("tokens_read", str(done["windows"] * cfg.seq_len)),
            ],  # fmt: skip
        )
        b.execute("DELETE FROM build_state")
