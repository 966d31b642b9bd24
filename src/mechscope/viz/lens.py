"""Views of a :class:`~mechscope.lenses.LogitLensResult`: a coloured table and a target plot.

Like every view, these take result arrays and token strings, never a model; ``decode`` turns a
token id into its text (e.g. ``lambda i: tokenizer.decode([i])``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from mechscope.errors import MechscopeError
from mechscope.lenses.logit_lens import LogitLensResult
from mechscope.viz.html import Markup, figure_img, page, render

__all__ = ["lens_kl_figure", "lens_page", "lens_table", "lens_target_figure"]


def lens_table(
    result: LogitLensResult,
    str_tokens: Sequence[str],
    decode: Callable[[int], str],
    *,
    last: int = 6,
) -> Markup:
    """Layers x the ``last`` positions read: each cell is the top-1 token and its probability.

    Column headers are the input tokens; a cell is the lens's guess for the token after it.
    Cells are shaded by probability; hovering shows the top-k. With a target, a last column gives
    its rank (0 = top-1) at the final position.
    """
    n_pos = result.top_ids.shape[1]
    columns = range(max(0, n_pos - last), n_pos)
    rows = []
    for row, layer in enumerate(result.layers):
        cells = []
        for c in columns:
            ids, probs = result.top_ids[row, c], result.top_probs[row, c]
            tip = ", ".join(f"{decode(int(i))!r} {float(q):.3f}" for i, q in zip(ids, probs))
            cells.append({"token": decode(int(ids[0])), "prob": float(probs[0]), "tip": tip})
        rank = None if result.target_rank is None else int(result.target_rank[row, -1])
        rows.append({"layer": int(layer), "cells": cells, "rank": rank})
    return render(
        "lens_table.html.j2",
        site=result.site,
        columns=[str_tokens[result.positions[c]] for c in columns],
        target=None if result.target is None else decode(result.target),
        rows=rows,
    )


def lens_target_figure(result: LogitLensResult, target_label: str, *, pos: int = -1) -> Figure:
    """Probability and rank of the target token by layer, at the ``pos``-th position read."""
    if result.target_rank is None or result.target_prob is None:
        raise MechscopeError("the lens result has no target; pass target= to logit_lens")
    layers = result.layers
    fig = Figure(figsize=(9, 3.2))
    ax_prob, ax_rank = fig.subplots(1, 2)
    ax_prob.plot(layers, result.target_prob[:, pos], marker="o", markersize=3)
    ax_prob.set(xlabel="layer", ylabel="probability", ylim=(0, 1))
    ax_prob.set_title(f"P({target_label}) by layer")
    ax_rank.plot(layers, result.target_rank[:, pos] + 1, marker="o", markersize=3, color="C1")
    ax_rank.set(xlabel="layer", ylabel="rank (1 = top)", yscale="log")
    ax_rank.set_title(f"rank of {target_label} by layer")
    ax_rank.invert_yaxis()  # up is better in both panels
    ax_rank.yaxis.set_major_formatter(ScalarFormatter())
    for ax in (ax_prob, ax_rank):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def lens_kl_figure(
    layers: Sequence[int], curves: dict[str, Sequence[float]], *, title: str = ""
) -> Figure:
    """KL(final || lens) in nats by layer, one line per lens (e.g. ``{"logit": ..., "tuned": ...}``)."""
    fig = Figure(figsize=(6.5, 3.4))
    ax = fig.subplots()
    for i, (name, values) in enumerate(curves.items()):
        ax.plot(list(layers), list(values), marker="o", markersize=3, color=f"C{i}", label=name)
    ax.set(xlabel="layer", ylabel="KL(final || lens), nats", ylim=(0, None))
    ax.set_title(title or "KL to the final distribution by layer")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def lens_page(
    results: Mapping[str, LogitLensResult],
    str_tokens: Sequence[str],
    decode: Callable[[int], str],
    *,
    prompt: str,
    model: str = "",
) -> str:
    """The page of ``mechscope lens``: KL by layer, then one table per lens (all positions)."""
    first = next(iter(results.values()))
    curves = {name: r.mean_kl() for name, r in results.items()}
    fig = lens_kl_figure(first.layers, curves, title="KL(final || lens) on this prompt")
    sections = [("KL by layer", figure_img(fig, "KL to the final distribution by layer"))]
    for name, result in results.items():
        table = lens_table(result, str_tokens, decode, last=len(str_tokens))
        body = render("lens_section.html.j2", prompt=prompt, table=table)
        sections.append((f"{name} lens", body))
    return page("mechscope lens", sections, subtitle=model)
