"""The page of ``mechscope anomaly score --html``: inputs by score, tokens shaded by theirs."""

from __future__ import annotations

from typing import Any

from mechscope.viz.html import page, render

__all__ = ["anomaly_page"]

SHOWN = 50


def anomaly_page(data: dict[str, Any], shown: int = SHOWN) -> str:
    """A page from ``AnomalyScores.to_dict()``: the ``shown`` highest-scoring inputs."""
    inputs = sorted(data["inputs"], key=lambda i: -i["score"])[:shown]
    scores = [t["score"] for i in inputs for t in i["token_scores"]]
    body = render(
        "anomaly_inputs.html.j2",
        data=data,
        shown=inputs,
        flagged=sum(i["flagged"] for i in data["inputs"]),
        vmin=min(scores, default=0.0),
        vmax=max(scores, default=1.0),
    )
    return page("Anomaly scores", [("Inputs", body)], subtitle=str(data["kind"]))
