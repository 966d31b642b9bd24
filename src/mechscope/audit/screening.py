"""Sections 6 and 7: anomaly screening with a fitted detector, and compression sensitivity.

**Anomaly screening** (``--detector DET``, :mod:`mechscope.anomaly`): the detector must have been
fitted on this model (checked by weights fingerprint before anything runs). The section reports
its calibration (held-out trusted inputs, the threshold at ``fpr``) and, per screening set
(``--screen NAME=PATH``), the share of inputs flagged and the top-scoring inputs. With a set named
``clean`` the others are also scored against it (AUROC, average precision, FPR at 95% recall:
:func:`mechscope.anomaly.separation`).

**Compression sensitivity** (``--compress``, :mod:`mechscope.compress`): a copy of the model is
quantized with uniform round-to-nearest at each budget of ``compress_bits`` (no calibration
text needed), and every task's clean logit difference and the share of prompts whose top-1
prediction is unchanged are measured on the same prompts as the findings.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from mechscope.audit.config import AuditContext
from mechscope.models.hooked import HookedModel
from mechscope.viz import render, save_png
from mechscope.viz.html import figure_uri

__all__ = ["check_detector", "compress_section", "screen_section"]

SHOWN = 5  # top-scoring inputs listed per set


def check_detector(model: HookedModel, path: str) -> Any:
    """The detector at ``path``; a one-line error when it was fitted on another model."""
    from mechscope.anomaly import load_detector
    from mechscope.anomaly.score import check_model

    detector = load_detector(path)
    check_model(detector, model)
    return detector


def _screen_set(detector: Any, model: HookedModel, texts: list[str], cfg: Any, kind: str) -> dict:
    from mechscope.anomaly import score_texts

    scored = score_texts(detector, model, texts, kind=kind, fpr=cfg.fpr, quiet=True)
    top = sorted(scored.inputs, key=lambda i: (-i.score, i.index))[:SHOWN]
    return {
        "n": len(texts),
        "flagged": sum(i.flagged for i in scored.inputs),
        "flagged_share": sum(i.flagged for i in scored.inputs) / max(1, len(texts)),
        "scores": [i.score for i in scored.inputs],
        "top": [
            {
                "index": i.index,
                "score": i.score,
                "flagged": i.flagged,
                "layer": i.layer,
                "text": texts[i.index][:200],
            }
            for i in top
        ],  # fmt: skip
    }


def screen_section(model: HookedModel, actx: AuditContext, detector: Any) -> None:
    """Calibration and flags of the detector on the screening sets."""
    from mechscope.anomaly import read_inputs, separation
    from mechscope.anomaly.score import default_kind

    cfg = actx.config
    kind = default_kind(detector)
    held = detector.calibration[kind]["scores"]
    data: dict[str, Any] = {
        "detector": cfg.detector, "kind": kind, "kinds": list(detector.config.kinds),
        "layers": detector.layers, "site": detector.config.site, "fpr": cfg.fpr,
        "threshold": detector.threshold(kind, cfg.fpr), "held_out_inputs": len(held),
        "trained_on": detector.model, "sets": {},
    }  # fmt: skip
    for name, path in cfg.screen:
        data["sets"][name] = _screen_set(detector, model, read_inputs(path), cfg, kind)
    clean = data["sets"].get("clean")
    for name, s in data["sets"].items():
        if clean is not None and name != "clean":
            s["vs_clean"] = separation(s["scores"], clean["scores"]).to_dict()
    folder = actx.folder("anomaly")
    fig = _score_figure(data, held)
    png = save_png(fig, folder / "scores.png")
    link = actx.artefact(folder / "anomaly.json", data)
    actx.data["anomaly"] = data
    actx.parts["anomaly"] = render("audit/anomaly.html.j2", d=data, figure=figure_uri(fig),
                                   png=actx.link(png), link=link)  # fmt: skip


def _score_figure(data: dict[str, Any], held: list[float]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2))
    ax = fig.add_subplot()
    groups = {"held-out trusted": held, **{k: v["scores"] for k, v in data["sets"].items()}}
    ax.boxplot(list(groups.values()), orientation="horizontal", tick_labels=list(groups))
    ax.axvline(data["threshold"], color="#cf222e", ls="--", label=f"threshold at FPR {data['fpr']}")
    ax.set_xlabel(f"{data['kind']} input score (higher = more anomalous)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _task_scores(model: HookedModel, batches: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from mechscope.tasks import evaluate

    out = {}
    for name, batch in batches.items():
        logits = model(batch.clean_tokens, attention_mask=batch.clean_mask)
        top1 = logits[torch.arange(len(batch)), batch.last_pos].argmax(-1)
        out[name] = {"logit_diff": evaluate(model, batch).clean_mean, "top1": top1.tolist()}
    return out


def group_size(model: HookedModel, largest: int = 64) -> int:
    """The largest power of two up to ``largest`` dividing every decoder Linear's input width
    (64 on SmolLM2; smaller on tiny test models)."""
    widths = {m.in_features for name, m in model.hf.named_modules()
              if isinstance(m, torch.nn.Linear) and "lm_head" not in name}  # fmt: skip
    g = largest
    while g > 1 and any(w % g for w in widths):
        g //= 2
    return g


def compress_section(model: HookedModel, actx: AuditContext, batches: dict[str, Any]) -> None:
    """Each task's logit difference and top-1 agreement after uniform RTN at each budget."""
    from mechscope.compress import CompressConfig, compress

    cfg = actx.config
    base = _task_scores(model, batches)
    rows, group = [], group_size(model)
    for bits in cfg.compress_bits:
        small = HookedModel(copy.deepcopy(model.hf), model.tokenizer,
                            provenance=dict(model.provenance))  # fmt: skip
        result = compress(
            small, CompressConfig(bits=bits, method="uniform", group_size=group, seed=cfg.seed)
        )
        after = _task_scores(small, batches)
        del small
        for name in batches:
            a, b = after[name], base[name]
            same = sum(x == y for x, y in zip(a["top1"], b["top1"], strict=True))
            rows.append({"bits": bits, "effective_bits": result.effective_bits, "task": name,
                         "logit_diff": a["logit_diff"], "full_logit_diff": b["logit_diff"],
                         "top1_agreement": same / len(a["top1"])})  # fmt: skip
    data = {"method": "uniform round-to-nearest", "group_size": group, "rows": rows}
    folder = actx.folder("compress")
    fig = _compress_figure(rows)
    png = save_png(fig, folder / "compress.png")
    link = actx.artefact(folder / "compress.json", data)
    actx.data["compress"] = data
    actx.parts["compress"] = render("audit/compress.html.j2", rows=rows, group=group, figure=figure_uri(fig),
                                    png=actx.link(png), link=link)  # fmt: skip


def _compress_figure(rows: list[dict[str, Any]]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.2))
    ax = fig.add_subplot()
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = sorted((r for r in rows if r["task"] == task), key=lambda r: -r["bits"])
        xs = ["full", *(f"{r['bits']:g}" for r in mine)]
        ax.plot(xs, [mine[0]["full_logit_diff"], *(r["logit_diff"] for r in mine)], marker="o",
                label=task)  # fmt: skip
    ax.axhline(0, color="#57606a", lw=1)
    ax.set_xlabel("effective bits per weight")
    ax.set_ylabel("clean logit difference")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
