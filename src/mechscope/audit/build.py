"""Build the audit: run every step (progress shown), then write ``audit.html``, ``audit.json`` and
``audit.pdf`` into one folder with every figure's PNG and JSON artefacts beside them.

The HTML is self-contained (inline CSS, figures as base64 PNG) and each figure links to its file.
It is deterministic: the same config, seed and model give the same bytes except the one
``<time id="created">`` element. Steps that cannot run on a model (``NotAvailable``) or on its
tokenizer (a task it cannot express) become notes and limitations, not failures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from mechscope.audit.config import AuditConfig, AuditContext
from mechscope.audit.identity import data_hashes, parameters_sha256, versions, weight_files
from mechscope.audit.limits import SECTION_TITLES, compliance, limitations
from mechscope.audit.methods import methods_rows
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.progress import steps
from mechscope.report.build import model_name
from mechscope.viz import Markup, render

__all__ = ["AuditFiles", "audit_steps", "build_audit", "check_pdf", "write_pdf"]

CHROMIUM = "/usr/bin/chromium"


@dataclass(frozen=True)
class AuditFiles:
    html: Path
    json: Path
    pdf: Path | None


Step = tuple[str, Callable[[], None]]


def _scope(model: HookedModel, actx: AuditContext) -> None:
    from mechscope.audit.findings import reused
    from mechscope.report.sections import model_card

    block, data = reused(model, actx, "scope", [model_card])
    actx.data["scope"] = {
        "name": model_name(model), "model": data["model"], "weight_files": weight_files(model),
        "parameters_sha256": parameters_sha256(model), "versions": versions(),
    }  # fmt: skip
    actx.parts["scope"] = block


def audit_steps(model: HookedModel, actx: AuditContext) -> list[Step]:
    """The steps of one audit, in order, each a name and a no-argument function."""
    from mechscope.audit import findings as f
    from mechscope.audit import screening, validation
    from mechscope.report.heads_section import heads_section
    from mechscope.report.lens_section import tuned_lens_section
    from mechscope.report.sae_section import sae_section
    from mechscope.report.sections import logit_lens_section

    cfg, state = actx.config, {}
    detector = screening.check_detector(model, cfg.detector) if cfg.detector else None
    out: list[Step] = [("Scope and model identity", lambda: _scope(model, actx)),
                       ("Task prompts", lambda: state.update(f.task_batches(model, actx)))]  # fmt: skip

    def put(key: str, name: str, builders: list, **kw: Any) -> Callable[[], None]:
        def run() -> None:
            actx.parts[key], data = f.reused(model, actx, name, builders, **kw)
            actx.data[key] = data

        return run

    if "circuits" in cfg.findings:
        for task in cfg.tasks:
            out.append(
                (f"Circuit: {task}", lambda t=task: f.task_finding(model, actx, t, state[t]))
            )
    optional = {
        "heads": put("heads", "heads", [heads_section]),
        "lens": put("lens", "lens", [logit_lens_section, tuned_lens_section]),
        "probes": lambda: f.probes_finding(model, actx),
        "sae": put("sae", "sae", [sae_section]),
        "features": lambda: f.features_finding(model, actx),
    }
    out += [(f"Findings: {k}", fn) for k, fn in optional.items() if k in cfg.findings]

    def validate(task: str) -> None:
        if isinstance(state[task], tuple) and "circuit" in actx.data["tasks"][task]:
            validation.task_validation(model, actx, task, state[task][1])

    if "circuits" in cfg.findings:
        out += [(f"Validation: {t}", lambda t=t: validate(t)) for t in cfg.tasks]
    if detector is not None:
        out.append(("Anomaly screening", lambda: screening.screen_section(model, actx, detector)))
    if cfg.compress_bits:
        batches = lambda: {k: v[1] for k, v in state.items() if isinstance(v, tuple)}  # noqa: E731
        out.append(("Compression", lambda: screening.compress_section(model, actx, batches())))
    return out


def _skipped(cfg: AuditConfig) -> dict[str, str]:
    out = {}
    for name in ("circuits", "heads", "lens", "probes", "sae", "features"):
        if name not in cfg.findings:
            out[name] = "left out of this audit's findings (--findings)"
    if "features" in cfg.findings and not cfg.features:
        out["features"] = "no feature database given (--features DB)"
    if not cfg.detector:
        out["anomaly screening"] = "no detector given (--detector DET)"
    if not cfg.compress_bits:
        out["compression sensitivity"] = "not requested (--compress)"
    return out


def _present(actx: AuditContext) -> dict[int, bool]:
    d = actx.data
    found = any(k in d and "skipped" not in d[k] for k in ("heads", "lens", "probes", "sae"))
    found |= any("skipped" not in t for t in d.get("tasks", {}).values())
    found |= bool(d.get("features", {}).get("top"))
    return {1: True, 2: True, 3: True, 4: found, 5: bool(d.get("validation")),
            6: "anomaly" in d, 7: "compress" in d, 8: True, 9: True, 10: True}  # fmt: skip


def _sections(model: HookedModel, actx: AuditContext) -> list[tuple[str, Markup]]:
    cfg, d, p = actx.config, actx.data, actx.parts
    present = _present(actx)
    d["compliance"] = compliance(present)
    d["limitations"] = limitations(d, cfg)
    d["methods"] = methods_rows(model, actx)
    d["manifest"] = {
        "config": cfg.to_dict(), "command": list(cfg.command), "versions": d["scope"]["versions"],
        "seeds": {"controls, probes, compression": cfg.seed, "task prompts": 0},
        "data": data_hashes(cfg, d.pop("task_texts", {}), cfg.corpus),
        "parameters_sha256": d["scope"]["parameters_sha256"],
    }  # fmt: skip
    kw = {"d": d, "p": p, "cfg": cfg, "present": present}
    return [(title, render(f"audit/s{i}.html.j2", **kw)) for i, title in
            enumerate(SECTION_TITLES, 1)]  # fmt: skip


def build_audit(
    model: HookedModel,
    out_dir: str | Path,
    config: AuditConfig | None = None,
    *,
    pdf: bool = True,
    quiet: bool = False,
    created: str | None = None,
) -> AuditFiles:
    """Run the audit of ``model`` and write ``out_dir/audit.html`` (and ``.json``, ``.pdf``)."""
    import json

    from mechscope.files import write_atomic

    if model.tokenizer is None:
        raise MechscopeError("the audit reads text prompts: load a model with a tokenizer")
    if pdf:
        check_pdf()
    config = config or AuditConfig()
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise MechscopeError(f"audit folder {out} is a file; pass a folder")
    out.mkdir(parents=True, exist_ok=True)
    actx = AuditContext(config=config, out_dir=out)
    actx.data["skipped"] = _skipped(config)
    plan = audit_steps(model, actx)
    with torch.no_grad():  # the circuit builder turns gradients on where it needs them
        for name, fn in steps(plan, lambda s: s[0], desc="audit", quiet=quiet):
            start = time.perf_counter()
            fn()
            actx.timings[name] = round(time.perf_counter() - start, 2)
    created = created or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections = _sections(model, actx)
    html = render("audit/page.html.j2", title=f"mechscope audit: {model_name(model)}",
                  created=created, sections=[{"title": t, "body": b, "anchor": f"s{i}"}
                                             for i, (t, b) in enumerate(sections, 1)])  # fmt: skip
    html_path, json_path = out / "audit.html", out / "audit.json"
    write_atomic(html_path, str(html), fsync=False)
    record = {"created": created, "timings": actx.timings, **actx.data}
    write_atomic(json_path, json.dumps(record, indent=1, default=str) + "\n", fsync=False)
    pdf_path = write_pdf(html_path, out / "audit.pdf") if pdf else None
    return AuditFiles(html_path, json_path, pdf_path)


def check_pdf() -> None:
    """A one-line error when the PDF cannot be printed (no Chromium)."""
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        raise MechscopeError(
            "the PDF is printed through Playwright: pip install playwright; or pass --no-pdf"
        )
    if not Path(CHROMIUM).exists():
        raise MechscopeError(
            f"the PDF needs Chromium at {CHROMIUM} (apt-get install chromium); or pass --no-pdf"
        )


def write_pdf(html: Path, pdf: Path) -> Path:
    """Print ``html`` to ``pdf`` (A4) with headless Chromium through Playwright."""
    from playwright.sync_api import Error, sync_playwright

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(html.resolve().as_uri(), wait_until="load")
                page.emulate_media(media="print")
                tmp = pdf.with_name(f".{pdf.name}.tmp")
                page.pdf(path=str(tmp), format="A4", print_background=True,
                         margin={"top": "12mm", "bottom": "12mm", "left": "10mm", "right": "10mm"})  # fmt: skip
                tmp.replace(pdf)
            finally:
                browser.close()
    except Error as exc:
        raise MechscopeError(f"printing the PDF failed: {str(exc).splitlines()[0]}") from exc
    return pdf
