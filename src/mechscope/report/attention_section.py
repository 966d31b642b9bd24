"""The report's attention section: every head's pattern on the lens prompt, interactive.

Steps: one forward of ``ReportConfig.lens_prompt`` caching every layer's ``attn.hook_pattern``
(:func:`mechscope.views.attention_patterns`), a per-head summary (mean weight on the first
token, on the previous token and on itself, and the key the last token attends to most), and the
interactive view of :mod:`mechscope.viz.attention` opened on the most previous-token-like head.
A prompt too long to embed for every layer is shown for as many layers as fit, with a note.
"""

from __future__ import annotations

import numpy as np

from mechscope.models.hooked import HookedModel
from mechscope.report.context import ReportContext
from mechscope.views import attention_patterns, head_summary
from mechscope.viz import Markup, escape, show_token
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
    summary = head_summary(view.patterns) if n_pos > 1 else None
    ctx.data["attention"] = {
        "prompt": prompt,
        "str_tokens": view.str_tokens,
        "layers": list(view.layers),
        "n_heads": int(view.patterns.shape[1]),
        **({k: np.round(v, 3).tolist() for k, v in summary.items()} if summary is not None else {}),
    }
    initial = None
    notes = []
    if summary is not None:
        prev = summary["previous_token"]
        row, head = np.unravel_index(int(np.argmax(prev)), prev.shape)
        initial = (int(row), int(head))
        sink = summary["first_token"]
        last = view.str_tokens[-1]
        notes.append(
            f"Most previous-token-like head: L{view.layers[row]}H{head} "
            f"(mean weight {prev[row, head]:.2f} on the token before). Mean weight on the first "
            f"token over all heads: {sink.mean():.2f} (attention sink). The last token "
            f"{escape(show_token(last))} attends most to: "
            + escape(_top_keys(summary["last_query_argmax"], view.str_tokens))
            + "."
        )
    if layers is not None:
        notes.append(
            f"The prompt is {n_pos} tokens: only layers {', '.join(map(str, view.layers))} are "
            "shown (use mechscope attention --layers for others)."
        )
    intro = (
        f'<p>Prompt: <span class="tok">{escape(prompt)}</span>. Every head\'s attention pattern '
        "(rows: queries, columns: keys; each row sums to 1). " + " ".join(notes) + "</p>"
    )
    widget = attention_widget(view.str_tokens, view.patterns, layers=view.layers, initial=initial)
    return Markup(intro + widget)


def _top_keys(argmax: np.ndarray, str_tokens: list[str], k: int = 3) -> str:
    """The ``k`` keys that are the last query's top key in most heads, with head counts."""
    counts = np.bincount(argmax.ravel(), minlength=len(str_tokens))
    order = np.argsort(-counts, kind="stable")[:k]
    return ", ".join(
        f"{show_token(str_tokens[i])} (position {i}, {counts[i]} heads)" for i in order if counts[i]
    )
