"""Attention views from arrays: an interactive, self-contained HTML view and a static PNG grid.

Inputs are the prompt's tokens and patterns ``[layer head query_pos key_pos]`` (e.g. from
:func:`mechscope.heads.attention_patterns`), never a model.

The HTML view (template ``attention_widget.html.j2``, script ``templates/assets/attention.js``,
styles in the shared stylesheet; no CDN, no fetch) has: a layer and a head picker; a
grid of thumbnails of every head of the chosen layer (or of all layers); two token strips where
hovering a query token colours the keys by how much it attends to each, and hovering a key token
colours the queries by how much each attends to it (a click keeps the choice); and an enlarged
heatmap of the selected head (hover a cell for its weight). The weights are embedded as JSON in
per-mille integers (3 decimals), with each row's trailing zeros cut (a causal pattern's upper
triangle costs nothing). Token text is shown with invisible characters made visible (space ␣,
newline ↵) and is inserted as text, never as HTML.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mechscope.errors import MechscopeError
from mechscope.viz.html import Markup, json_for_script, page, render, save_png, show_token

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "MAX_VALUES",
    "attention_figure",
    "attention_html",
    "attention_png",
    "attention_widget",
    "pack_patterns",
]

SCALE = 1000  # weights are embedded as integers in thousandths
MAX_VALUES = 2_000_000  # embedded weights at most (a page of ~8 MB); more: fewer layers/tokens
_SERIAL = itertools.count()  # keeps two views of the same data on one page apart


def _check(str_tokens: Sequence[str], patterns: Any, layers: Sequence[int] | None) -> np.ndarray:
    p = np.asarray(patterns, dtype=np.float64)
    if p.ndim != 4 or p.shape[-1] != p.shape[-2]:
        raise MechscopeError(
            f"patterns must be [layer head query_pos key_pos], got shape {tuple(p.shape)}"
        )
    if p.shape[-1] != len(str_tokens):
        raise MechscopeError(f"{len(str_tokens)} tokens for patterns over {p.shape[-1]} positions")
    if 0 in p.shape:
        raise MechscopeError(f"no attention to show: patterns of shape {tuple(p.shape)}")
    if not np.isfinite(p).all():
        raise MechscopeError("patterns hold NaN or inf; pass softmax weights")
    if layers is not None and len(layers) != p.shape[0]:
        raise MechscopeError(f"{len(layers)} layer labels for {p.shape[0]} layers of patterns")
    return p


def pack_patterns(patterns: np.ndarray) -> list[list[list[list[int]]]]:
    """[layer][head][query] -> per-mille integer weights over keys, trailing zeros cut."""
    ints = np.rint(np.clip(patterns, 0.0, 1.0) * SCALE).astype(np.int64)
    nonzero = ints != 0
    # length of each row = 1 + index of its last nonzero entry (0 for an all-zero row)
    n_keys = ints.shape[-1]
    lengths = np.where(nonzero.any(-1), n_keys - np.argmax(nonzero[..., ::-1], -1), 0)
    rows = ints.tolist()
    return [
        [[row[:n] for row, n in zip(head, head_len)] for head, head_len in zip(layer, layer_len)]
        for layer, layer_len in zip(rows, lengths.tolist())
    ]


def attention_widget(
    str_tokens: Sequence[str],
    patterns: Any,
    *,
    layers: Sequence[int] | None = None,
    initial: tuple[int, int] | None = None,
    max_values: int = MAX_VALUES,
) -> Markup:
    """The interactive view as an HTML fragment (a ``div.msattn`` with its own style and script).

    ``layers`` labels the rows of ``patterns`` with block indices (default 0..); ``initial`` is
    the ``(row, head)`` selected at first (default: the first). Several fragments can share a page.
    """
    p = _check(str_tokens, patterns, layers)
    n_layers, n_heads, n_pos, _ = p.shape
    labels = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    rows = pack_patterns(p)
    n_values = sum(len(r) for layer in rows for head in layer for r in head)
    if n_values > max_values:
        raise MechscopeError(
            f"the attention view would embed {n_values:,} weights ({n_layers} layers x {n_heads} "
            f"heads x {n_pos} tokens), more than {max_values:,}; use a shorter prompt or fewer "
            "layers (--layers 0,5-7)"
        )
    row, head = initial or (0, 0)
    if not (0 <= row < n_layers and 0 <= head < n_heads):
        raise MechscopeError(f"initial head {initial} is outside {n_layers} layers x {n_heads}")
    payload = {
        "tokens": [show_token(t) for t in str_tokens],
        "layers": labels,
        "n_heads": n_heads,
        "scale": SCALE,
        "initial": [row, head, n_pos - 1],
        "rows": rows,
    }
    data = str(json_for_script(payload))
    uid = f"msattn-{hashlib.sha1(data.encode()).hexdigest()[:8]}-{next(_SERIAL)}"
    return render("attention_widget.html.j2", uid=uid, payload=payload, str_tokens=list(str_tokens))


def attention_html(
    str_tokens: Sequence[str],
    patterns: Any,
    title: str = "Attention patterns",
    *,
    layers: Sequence[int] | None = None,
    initial: tuple[int, int] | None = None,
    subtitle: str = "",
    max_values: int = MAX_VALUES,
) -> str:
    """A complete self-contained HTML page holding :func:`attention_widget`."""
    widget = attention_widget(
        str_tokens, patterns, layers=layers, initial=initial, max_values=max_values
    )
    return page(title, [("Attention", widget)], subtitle=subtitle)


def _select(labels: list[int], wanted: Sequence[int] | None, what: str, n: int) -> list[int]:
    """Indices (rows of the array) of the wanted labels; all when None."""
    if wanted is None:
        return list(range(len(labels)))
    missing = [w for w in wanted if w not in labels]
    if missing:
        raise MechscopeError(f"{what} {missing[0]} is not in the patterns ({what}s: {labels})")
    return [labels.index(w) for w in wanted]


def attention_figure(
    str_tokens: Sequence[str],
    patterns: Any,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    layer_labels: Sequence[int] | None = None,
    title: str = "",
) -> Figure:
    """A grid of heatmaps: one row per chosen layer, one column per chosen head.

    ``layers`` and ``heads`` pick by block index (``layer_labels`` gives the block index of
    each row of ``patterns``, default 0..); token labels are drawn when the panels are large.
    """
    from matplotlib.figure import Figure

    p = _check(str_tokens, patterns, layer_labels)
    labels = list(range(p.shape[0])) if layer_labels is None else [int(x) for x in layer_labels]
    rows = _select(labels, layers, "layer", p.shape[0])
    cols = _select(list(range(p.shape[1])), heads, "head", p.shape[1])
    n_pos = p.shape[-1]
    ticks = len(rows) * len(cols) <= 4 and n_pos <= 48
    panel = 5.0 if ticks else 1.3
    fig = Figure(figsize=(1.2 + panel * len(cols), 0.6 + panel * len(rows)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), len(cols), squeeze=False))
    shown = [show_token(t) for t in str_tokens]
    for i, r in enumerate(rows):
        for j, h in enumerate(cols):
            ax = axes[i, j]
            im = ax.imshow(p[r, h], cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(f"L{labels[r]}H{h}", fontsize=10 if ticks else 7, pad=2)
            if ticks:
                ax.set_xticks(range(n_pos), shown, rotation=90, fontsize=8)
                ax.set_yticks(range(n_pos), shown, fontsize=8)
                ax.set_xlabel("key" if i == len(rows) - 1 else "")
                ax.set_ylabel("query" if j == 0 else "")
            else:
                ax.set_xticks([])
                ax.set_yticks([])
    shrink = 0.6 if ticks else min(0.6, 3 / len(rows))  # about 3 panels tall in a big grid
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=shrink, label="attention weight")
    if title:
        fig.suptitle(title)
    return fig


def attention_png(
    str_tokens: Sequence[str],
    patterns: Any,
    path: str | Path,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    layer_labels: Sequence[int] | None = None,
    title: str = "",
    dpi: int = 100,
) -> Path:
    """Write :func:`attention_figure` to ``path`` as PNG; return the path."""
    fig = attention_figure(
        str_tokens, patterns, layers=layers, heads=heads, layer_labels=layer_labels, title=title
    )
    return save_png(fig, path, dpi=dpi)
