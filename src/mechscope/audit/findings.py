"""Section 4, findings: the report's section builders run again per audit, plus probes and a
feature database.

Each builder of :mod:`mechscope.report` (model card, circuit per task, head detectors, logit and
tuned lens, SAE) runs on a :class:`~mechscope.report.ReportContext` whose folder is a subfolder of
the audit (``findings/<name>/``), so its PNGs land there; the numbers it records are written
beside them as ``<name>.json`` and the block links both. Caching is the builders' own (the tuned
lens and the report's SAE are trained once per model and reused).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mechscope.audit.config import AuditContext, slug
from mechscope.audit.limits import PERFORMS
from mechscope.errors import MechscopeError, NotAvailable
from mechscope.models.hooked import HookedModel
from mechscope.report import ReportConfig, ReportContext
from mechscope.viz import Markup, render, save_png
from mechscope.viz.html import figure_uri

__all__ = ["features_finding", "probes_finding", "reused", "task_batches", "task_finding"]


def report_config(actx: AuditContext, **kw: Any) -> ReportConfig:
    cfg = actx.config
    return ReportConfig(corpus=cfg.corpus, sae=cfg.sae, circuit_prompts=cfg.task_prompts,
                        circuit_fraction=cfg.circuit_fraction, **kw)  # fmt: skip


def reused(
    model: HookedModel,
    actx: AuditContext,
    name: str,
    builders: list[Callable[[HookedModel, ReportContext], str]],
    **config: Any,
) -> tuple[Markup, dict[str, Any]]:
    """Run report builders into ``findings/<name>/``; the block (with artefact links) and data."""
    folder = actx.folder("findings", name)
    rctx = ReportContext(config=report_config(actx, **config), out_dir=folder)
    bodies = []
    for fn in builders:
        try:
            bodies.append(Markup(fn(model, rctx)))
        except NotAvailable as exc:
            rctx.data.setdefault("not_available", {})[fn.__name__] = str(exc)
            bodies.append(render("skipped.html.j2", reason=f"not available for this model: {exc}"))
    data = {k: v for k, v in rctx.data.items() if k != "model"} if name != "scope" else rctx.data
    links = [actx.artefact(folder / f"{name}.json", data)]
    links += [actx.link(p) for p in sorted(folder.glob("*.png"))]
    links += [actx.link(p) for p in sorted(folder.glob("*.json")) if p.name != f"{name}.json"]
    block = render("audit/block.html.j2", body=Markup("").join(bodies), links=links)
    return block, rctx.data


def task_batches(model: HookedModel, actx: AuditContext) -> dict[str, Any]:
    """Each task's batch (``task_prompts`` prompts of seed ``seed``), or the reason it cannot run.

    Also records each task's prompts (what the manifest hashes) in ``actx.data["task_texts"]``.
    """
    from mechscope.tasks import load_task

    cfg, out, texts = actx.config, {}, {}
    for name in cfg.tasks:
        try:
            task = load_task(name, model, n=cfg.task_prompts)  # seed 0, as the circuit builder
            out[name] = (task, task.tokenize(model, require_uniform=True))
            texts[name] = repr((task.clean, task.corrupt, task.answer, task.wrong))
        except MechscopeError as exc:
            out[name] = str(exc)
    actx.data["task_texts"] = texts
    return out


def task_finding(model: HookedModel, actx: AuditContext, name: str, task: Any) -> None:
    """The report's circuit section on one task: patching, DLA and the EAP-IG circuit."""
    from mechscope.report.circuit_section import circuit_section

    record: dict[str, Any] = {"task": name}
    try:
        if isinstance(task, str):
            raise MechscopeError(task)
        block, data = reused(model, actx, f"circuit-{slug(name)}", [circuit_section],
                             circuit_task=name)  # fmt: skip
        record.update(data.get("circuit", {}))
        clean, corrupt = record["clean_logit_diff"], record["corrupt_logit_diff"]
        record["performs"] = bool(clean >= PERFORMS and clean > corrupt)
        record["example"] = {"clean": task[0].clean[0], "corrupt": task[0].corrupt[0],
                             "answer": task[0].answer[0]}  # fmt: skip
    except MechscopeError as exc:  # e.g. a task whose clean and corrupted runs do not differ
        record["skipped"] = str(exc)
        block = render("skipped.html.j2", reason=str(exc))
    actx.data.setdefault("tasks", {})[name] = record
    actx.parts.setdefault("tasks", {})[name] = block


def probes_finding(model: HookedModel, actx: AuditContext) -> None:
    """A logistic probe per evenly spaced layer, with the control task's selectivity."""
    from mechscope.probes import probe
    from mechscope.viz.probe import probe_curve_figure, probe_table

    cfg, n = actx.config, model.dims.n_layers
    layers = sorted({round(x) for x in np.linspace(0, n - 1, min(cfg.probe_layers, n))})
    sites = [f"blocks.{layer}.hook_resid_post" for layer in layers]
    try:
        result = probe(model, cfg.probe_set, sites, folds=0, seed=cfg.seed, quiet=True)
    except MechscopeError as exc:
        actx.data["probes"] = {"skipped": str(exc)}
        actx.parts["probes"] = render("skipped.html.j2", reason=str(exc))
        return
    folder = actx.folder("findings", "probes")
    data = {"set": cfg.probe_set, **result.to_dict()}
    actx.data["probes"] = data
    fig = probe_curve_figure(result)
    png = save_png(fig, folder / "probes.png")
    links = [actx.artefact(folder / "probes.json", data), actx.link(png)]
    actx.parts["probes"] = render(
        "audit/probes.html.j2", set=cfg.probe_set, sites=sites, table=probe_table(result),
        figure=figure_uri(fig), png=actx.link(png), links=links,
    )  # fmt: skip


def _explained(db: Any, source: str, limit: int) -> list[dict[str, Any]]:
    """The features of ``source`` with an explanation, each with its best-scored explanation."""
    rows = []
    for s in sorted(db.stats(source), key=lambda s: (-s["max"], s["index"]))[:limit]:
        for e in db.explanations(source, s["index"]):
            values = [x["value"] for x in e["scores"] if x["status"] == "ok"]
            if e["status"] != "ok" or not values:
                continue
            best = max(e["scores"], key=lambda x: -1e9 if x["value"] is None else x["value"])
            rows.append({"source": source, "index": s["index"], "max": s["max"],
                         "density": s["density"], "explanation": e["text"],
                         "explainer": e["explainer"], "scorer": best["scorer"],
                         "score": best["value"], "control": best["control"]})  # fmt: skip
    return rows


def features_finding(model: HookedModel, actx: AuditContext) -> None:
    """Top features of a feature database by their best explanation score."""
    from mechscope.features import open_db

    cfg = actx.config
    if not cfg.features:
        actx.data["features"] = {"skipped": "no feature database given (--features DB)"}
        actx.parts["features"] = render("skipped.html.j2", reason=actx.data["features"]["skipped"])
        return
    with open_db(cfg.features, readonly=True) as db:
        sources = db.sources()
        rows = [r for s in sources for r in _explained(db, s["source"], 200)]
    rows.sort(key=lambda r: (-r["score"], r["source"], r["index"]))
    n_explained = len(rows)
    data = {"sources": sources, "n_explained": n_explained, "top": rows[: cfg.top_features]}
    actx.data["features"] = data
    link = actx.artefact(actx.folder("findings", "features") / "features.json", data)
    actx.parts["features"] = render("audit/features.html.j2", data=data, link=link)
