"""A :class:`NeuronScan` as JSON-ready data: a layer summary plus the shown units in full.

Keys: ``model, layer, site, kind, tokens, windows, seq_len, k, include_first, logit_unit,
summary`` (every unit's ``index, max, min, mean, std, density``) and ``neurons``: for each shown
unit ``index, max, min, mean, std, density, top`` (windows best first: ``window, text, tokens,
acts, position, value``), ``histogram`` (``edges, counts``, trimmed to the occupied bins) and
``promotes`` / ``suppresses`` (``token, id, value``; empty when the readout has no write vector).
Statistics and top windows leave out each window's first position unless ``include_first``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mechscope.errors import MechscopeError
from mechscope.neurons.scan import NeuronScan

__all__ = ["logit_unit", "scan_to_dict", "unit_positions"]

DIGITS = 4


def unit_positions(scan: NeuronScan, units: Sequence[int]) -> list[int]:
    """Where the unit numbers ``units`` (e.g. neuron indices) sit in the scan."""
    where = {u: i for i, u in enumerate(scan.readout.units)}
    missing = [u for u in units if u not in where]
    if missing:
        raise MechscopeError(f"unit {missing[0]} was not scanned; scan it or pick another")
    return [where[u] for u in units]


def logit_unit(scan: NeuronScan) -> str:
    """What the ``promotes`` / ``suppresses`` values measure, in words."""
    how = (
        "through the final norm (its Jacobian averaged over corpus positions) and the unembedding"
        if scan.through_norm
        else "through the unembedding alone (final norm skipped)"
    )
    return f"logit change per unit of activation, {how}"


def _decode(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    return [tokenizer.decode([int(i)]) for i in ids]


def _histogram(scan: NeuronScan, i: int) -> dict[str, list]:
    counts = scan.histogram.counts[i]
    used = counts.nonzero().flatten()
    first, last = int(used.min()), int(used.max())
    edges = scan.histogram.edges(i)[first : last + 2]
    return {"edges": edges.tolist(), "counts": counts[first : last + 1].tolist()}


def _tokens(tokenizer: Any, ids: Any, values: Any) -> list[dict[str, Any]]:
    return [
        {"token": tok, "id": int(i), "value": round(float(v), DIGITS)}
        for tok, i, v in zip(_decode(tokenizer, ids.tolist()), ids, values, strict=True)
    ]


def _top(scan: NeuronScan, tokenizer: Any, i: int) -> list[dict[str, Any]]:
    t = scan.top
    rows = []
    for slot in range(t.k):
        window = int(t.windows[i, slot])
        if window < 0:  # fewer windows than k
            break
        ids = t.tokens[i, slot].tolist()
        rows.append(
            {
                "window": window,
                "text": tokenizer.decode(ids),
                "tokens": _decode(tokenizer, ids),
                "acts": [round(a, DIGITS) for a in t.acts[i, slot].tolist()],
                "position": int(t.positions[i, slot]),
                "value": float(t.values[i, slot]),
            }
        )
    return rows


def _stats(scan: NeuronScan, i: int) -> dict[str, Any]:
    h = scan.histogram
    return {
        "index": scan.readout.units[i],
        "max": float(h.hi[i]),
        "min": float(h.lo[i]),
        "mean": round(float(h.mean()[i]), 6),
        "std": round(float(h.std()[i]), 6),
        "density": round(float(h.density()[i]), 6),
    }


def scan_to_dict(
    scan: NeuronScan, tokenizer: Any, show: Sequence[int] | None = None, model: str = ""
) -> dict[str, Any]:
    """JSON-ready data; ``show`` lists positions in the scan (default: the 8 highest maxima)."""
    show = scan.ranked(8) if show is None else list(show)
    effects = scan.effects
    shown = []
    for i in show:
        entry = {**_stats(scan, i), "top": _top(scan, tokenizer, i)}
        entry["histogram"] = _histogram(scan, i)
        entry["promotes"] = (
            _tokens(tokenizer, effects.promote_ids[i], effects.promote_values[i]) if effects else []
        )
        entry["suppresses"] = (
            _tokens(tokenizer, effects.suppress_ids[i], effects.suppress_values[i])
            if effects
            else []
        )
        shown.append(entry)
    r = scan.readout
    return {
        "model": model,
        "layer": r.layer,
        "site": r.site,
        "kind": r.kind,
        "tokens": scan.n_tokens,
        "windows": scan.n_windows,
        "seq_len": scan.seq_len,
        "k": scan.top.k,
        "include_first": scan.include_first,
        "logit_unit": logit_unit(scan),
        "summary": [_stats(scan, i) for i in range(r.n_units)],
        "neurons": shown,
    }
