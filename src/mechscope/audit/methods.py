"""Section 3, methods: one row per analysis that ran, with the hook sites it read or wrote and
the data it used, read off the results (so a row describes what actually ran)."""

from __future__ import annotations

from typing import Any

from mechscope.audit.config import AuditContext
from mechscope.models.hooked import HookedModel

__all__ = ["methods_rows"]


def _row(method: str, sites: str, data: str, finding: str) -> dict[str, str]:
    return {"method": method, "sites": sites, "data": data, "finding": finding}


def _corpus(cfg: Any) -> str:
    c = cfg.corpus
    return "the built-in corpus" if c is None else str(getattr(c, "name", c))


def methods_rows(model: HookedModel, actx: AuditContext) -> list[dict[str, str]]:
    """``[{"method", "sites", "data", "finding"}]`` of the analyses in ``actx.data``."""
    cfg, d, n = actx.config, actx.data, model.dims.n_layers
    rows = []
    tasks = [k for k, t in d.get("tasks", {}).items() if "skipped" not in t]
    if tasks:
        data = f"{cfg.task_prompts} clean/corrupted prompt pairs (seed 0) of: {', '.join(tasks)}"
        rows += [
            _row("activation patching of the residual stream, by layer and position",
                 f"blocks.0-{n - 1}.hook_resid_pre", data, "4 (circuits)"),
            _row("attribution patching of every head; direct logit attribution",
                 "blocks.*.attn.hook_z, blocks.*.attn.hook_result", data, "4 (circuits)"),
            _row(f"EAP-IG edge attribution (5 steps), top {cfg.circuit_fraction:.1%} of edges, "
                 "faithfulness by patching every other edge to its corrupted value",
                 "blocks.*.attn.hook_q/k/v inputs, attn.hook_result, hook_mlp_out, "
                 "hook_resid_pre", data, "4, 5"),
        ]  # fmt: skip
    if d.get("validation"):
        rows.append(_row(
            f"mean ablation of the top {cfg.ablate_heads} heads by DLA against {cfg.control_seeds} "
            f"random head sets; {cfg.control_seeds} random circuits of the same size",
            "blocks.L.attn.hook_z (ablated heads); the circuit graph's edges",
            "the same task prompts (means over the clean prompts)", "5"))  # fmt: skip
    rows += _analysis_rows(d, cfg, n)
    rows += _screening_rows(d)
    return rows


def _analysis_rows(d: dict[str, Any], cfg: Any, n: int) -> list[dict[str, str]]:
    rows = []
    if "heads" in d and "skipped" not in d["heads"]:
        rows.append(_row("head detectors (induction, previous-token, duplicate-token, sink, copy "
                         "suppression)", "blocks.*.attn.hook_pattern, weights",
                         "16 repeated random token sequences", "4 (head roles)"))  # fmt: skip
    lens = d.get("lens", {})
    if "logit_lens" in lens:
        rows.append(_row("logit lens and tuned lens (held-out KL to the final distribution)",
                         f"blocks.0-{n - 1}.hook_resid_post",
                         f"the prompt {lens['logit_lens']['prompt']!r}; held-out windows of "
                         f"{_corpus(cfg)}", "4 (lenses)"))  # fmt: skip
    probes = d.get("probes", {})
    if "sites" in probes:
        rows.append(_row("logistic probes with a control task (Hewitt & Liang 2019)",
                         ", ".join(s["site"] for s in probes["sites"]), probes["set"],
                         "4 (probes)"))  # fmt: skip
    sae = d.get("sae", {}).get("sae", {})
    if "scores" in sae:
        rows.append(_row("SAE evaluation (FVU, L0, dead latents, loss recovered) and top windows",
                         str(sae["scores"]["hook_name"]), f"held-out windows of {_corpus(cfg)}",
                         "4 (SAE)"))  # fmt: skip
    feats = d.get("features", {})
    if "sources" in feats:
        rows.append(_row("feature database: explanations and their scores",
                         ", ".join(str(s["hook_name"]) for s in feats["sources"]),
                         "the database given", "4 (features)"))  # fmt: skip
    return rows


def _screening_rows(d: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    an = d.get("anomaly")
    if an:
        site = an["site"].replace("{layer}", "L") + f" for L in {an['layers']}"
        rows.append(_row(f"anomaly detector ({', '.join(an['kinds'])}), threshold at FPR "
                         f"{an['fpr']}", site, ", ".join(an["sets"]) or "calibration only",
                         "6"))  # fmt: skip
    if d.get("compress"):
        rows.append(
            _row(
                "uniform round-to-nearest quantization of a copy of the model",
                "every decoder-layer Linear weight",
                "the task prompts",
                "7",
            )
        )
    return rows
