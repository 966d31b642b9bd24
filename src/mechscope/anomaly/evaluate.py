"""Evaluate a detector on labelled sets: every kind and layer against the clean inputs."""

from __future__ import annotations

from typing import Any

from mechscope.anomaly.detector import Detector
from mechscope.anomaly.metrics import separation
from mechscope.anomaly.score import layer_scores

__all__ = ["evaluate_sets", "format_table"]


def evaluate_sets(
    detector: Detector,
    model: Any,
    clean: list[str],
    sets: dict[str, list[str]],
    *,
    sae: Any = None,
    max_tokens: int = 256,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Rows ``{set, kind, layer, auroc, average_precision, fpr_at_95_recall, n_pos, n_neg}``;
    ``layer`` is ``"all"`` for the combination over layers (and for the baselines)."""
    negative = layer_scores(detector, model, clean, sae=sae, max_tokens=max_tokens, quiet=quiet)
    rows = []
    for name, texts in sets.items():
        positive = layer_scores(detector, model, texts, sae=sae, max_tokens=max_tokens, quiet=quiet)
        for kind, columns in positive.items():
            for layer, scores in columns.items():
                sep = separation(scores, negative[kind][layer])
                rows.append({"set": name, "kind": kind, "layer": layer, **sep.to_dict()})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of :func:`evaluate_sets` rows."""
    lines = [f"{'set':<16} {'kind':<12} {'layer':>5} {'AUROC':>6} {'AP':>6} {'FPR@95':>7}"]
    for r in rows:
        lines.append(
            f"{r['set']:<16} {r['kind']:<12} {r['layer']:>5} {r['auroc']:>6.3f} "
            f"{r['average_precision']:>6.3f} {r['fpr_at_95_recall']:>7.3f}"
        )
    return "\n".join(lines)
