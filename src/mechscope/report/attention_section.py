"""The report's attention section: every head's pattern on the lens prompt, interactive.

Steps: one forward of ``ReportConfig.lens_prompt`` caching every layer's ``attn.hook_pattern``
(:func:`mechscope.heads.attention_patterns`), a per-head summary (mean weight on the first
token, on the previous token and on itself, and the key the last token attends to most), and the
interactive view of :mod:`mechscope.viz.attention` opened on the most previous-token-like head.
It also names the strongest read from the last token to a token further back than the one
before it, the first token (the attention sink) aside.
A prompt too long to embed for every layer is shown for as many layers as fit, with a note.
"""

from __future__ import annotations

import numpy as np

from mechscope.heads import AttentionPatterns, attention_patterns, head_summary
from mechscope.models.hooked import HookedModel
from mechscope.report.context import ReportContext
from mechscope.viz import render, show_token
from mechscope.viz.attention import MAX_VALUES, attention_widget

__all__ = ["attention_section"]


def _layers_that_fit(n_layers: int, n_heads: int, n_pos: int) -> list[int] | None:
    """None (all layers) if the causal patterns fit in the page, else evenly spread layers."""
    per_layer = n_heads * n_pos * (n_pos + 1) // 2
    fit = max(1, MAX_VALUES // max(per_layer, 1))
    if fit >= n_layers:
        return None
    return sorted({round(x) for x in np.linspace(0, n_layers - 1, fit)})


def attention_section(model: HookedModel, ctx: ReportContext) -> str:
    """The interactive attention view of the lens prompt and its per-head summary."""
    prompt = ctx.config.lens_prompt
    n_pos = model.to_tokens(prompt).shape[1]
    dims = model.dims
    layers = _layers_that_fit(dims.n_layers, dims.n_heads, n_pos)
    view = attention_patterns(model, prompt, layers)
    record = {
        "prompt": prompt,
        "str_tokens": view.str_tokens,
        "layers": list(view.layers),
        "n_heads": int(view.patterns.shape[1]),
    }
    initial, notes = None, []
    if n_pos > 1:
        initial, text = _summarise(view, record)
        notes.append(text)
    if layers is not None:
        notes.append(
            f"The prompt is {n_pos} tokens: only layers {', '.join(map(str, view.layers))} are "
            "shown (use mechscope attention --layers for others)."
        )
    ctx.data["attention"] = record
    widget = attention_widget(view.str_tokens, view.patterns, layers=view.layers, initial=initial)
    return render("report/attention.html.j2", prompt=prompt, notes=notes, widget=widget)


def _summarise(view: AttentionPatterns, record: dict) -> tuple[tuple[int, int], str]:
    """Add the head summary to ``record``; return the head to open on and a sentence (text)."""
    summary = head_summary(view.patterns)
    record.update({k: np.round(v, 3).tolist() for k, v in summary.items()})
    prev = summary["previous_token"]
    row, head = (int(i) for i in np.unravel_index(int(np.argmax(prev)), prev.shape))
    text = (
        f"Opened on the most previous-token-like head, L{view.layers[row]}H{head} (mean weight "
        f"{prev[row, head]:.2f} on the token before). Mean weight on the first token over all "
        f"heads: {summary['first_token'].mean():.2f} (attention sink). "
    )
    if len(view.str_tokens) > 3:
        r, h, key, weight = _strongest_last_read(view.patterns)
        token = view.str_tokens[key]
        record["strongest_last_token_read"] = {
            "layer": view.layers[r], "head": h, "key_pos": key, "token": token,
            "weight": round(weight, 3),
        }  # fmt: skip
        text += (
            f"Strongest read from the last token {show_token(view.str_tokens[-1])} "
            f"further back than the token before, first token aside: L{view.layers[r]}H{h}, "
            f"{weight:.2f} on {show_token(token)} (position {key}). "
        )
    top = _top_keys(summary["last_query_argmax"], view.str_tokens)
    return (row, head), text + f"The last token's top key, counted over heads: {top}."


def _strongest_last_read(patterns: np.ndarray) -> tuple[int, int, int, float]:
    """(layer row, head, key, weight): the largest weight from the last query to a key other than
    the first (the sink), itself and the one before (previous-token heads)."""
    last = patterns[:, :, -1, 1:-2]  # [layer head key_pos - 3]
    row, head, key = np.unravel_index(int(np.argmax(last)), last.shape)
    return int(row), int(head), int(key) + 1, float(last[row, head, key])


def _top_keys(argmax: np.ndarray, str_tokens: list[str], k: int = 3) -> str:
    """The ``k`` keys that are the last query's top key in most heads, with head counts."""
    counts = np.bincount(argmax.ravel(), minlength=len(str_tokens))
    order = np.argsort(-counts, kind="stable")[:k]
    return ", ".join(
        f"{show_token(str_tokens[i])} (position {i}, {counts[i]} heads)" for i in order if counts[i]
    )
