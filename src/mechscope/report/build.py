"""Build the self-contained HTML report of a model: every registered section, in order.

``build_report`` writes ``report.html`` (no external URL: CSS inline, figures as data URIs),
``report.json`` (the numbers the sections recorded) and each figure as a PNG file.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import torch

from mechscope import __version__
from mechscope.errors import MechscopeError, NotAvailable
from mechscope.models.hooked import HookedModel
from mechscope.progress import steps
from mechscope.report.context import ReportConfig, ReportContext, Section
from mechscope.report.sections import SECTIONS
from mechscope.viz.html import page, render

__all__ = ["build_report", "model_name"]


def model_name(model: HookedModel) -> str:
    """The name the model was loaded by, else its HF ``name_or_path``, else its family."""
    name = model.provenance.get("name") or getattr(model.hf.config, "name_or_path", "")
    return str(name or model.family.name)


def _prepare_dir(out_dir: str | Path) -> Path:
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise MechscopeError(f"report folder {out} is a file; pass a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MechscopeError(f"cannot create report folder {out}: {exc.strerror}") from exc
    return out


def build_report(
    model: HookedModel,
    out_dir: str | Path,
    *,
    config: ReportConfig | None = None,
    sections: list[Section] | None = None,
    quiet: bool = False,
) -> Path:
    """Write ``out_dir/report.html`` (and ``report.json``, PNGs); return the HTML file's path.

    ``sections`` defaults to the registry :data:`mechscope.report.sections.SECTIONS`. Progress
    goes to stderr (:func:`mechscope.progress.steps`): a bar naming the section on a terminal,
    else one line per section with its time; ``quiet`` hides both.
    """
    if model.tokenizer is None:
        raise MechscopeError("the report reads text prompts: load a model with a tokenizer")
    config = config or ReportConfig()
    out = _prepare_dir(out_dir)
    ctx = ReportContext(config=config, out_dir=out)
    parts: list[tuple[str, str]] = []
    run = steps(sections or SECTIONS, lambda s: s.name, desc="report", quiet=quiet)
    with torch.no_grad():  # not inference_mode: the circuit section needs gradients
        for section in run:
            try:
                body = section.fn(model, ctx)
            except NotAvailable as exc:  # e.g. no attention sites on a fallback model
                ctx.data.setdefault("not_available", {})[section.name] = str(exc)
                body = render("skipped.html.j2", reason=f"not available for this model: {exc}")
            parts.append((section.name, body))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    name = model_name(model)
    subtitle = f"{model!r} - mechscope {__version__}, {stamp}"
    html_path = out / "report.html"
    html_path.write_text(page(f"mechscope report: {name}", parts, subtitle=subtitle), "utf-8")
    record = {"model_name": name, "mechscope": __version__, "created": stamp, **ctx.data}
    (out / "report.json").write_text(json.dumps(record, indent=1, default=str) + "\n", "utf-8")
    return html_path
