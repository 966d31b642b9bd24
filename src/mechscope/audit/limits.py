"""Sections 8 and 9: limitations read off the results, and the compliance table.

:func:`limitations` states what the numbers do not support, each with the figure behind it:
a task the model fails, a circuit with low faithfulness or no better than random circuits, heads
whose ablation does no more than random heads', a tuned lens that is not better, a poor SAE, a
probe no more selective than its control, a detector near chance or flagging clean text, a task
that breaks under compression, and every analysis that did not run. Thresholds are the module
constants below.

:func:`compliance` maps each section to the NIST AI RMF 1.0 MEASURE 2.x subcategories and the EU
AI Act Annex IV items 2(b) and 3 it informs, and counts the sections present. It is the
project's reading of those texts, not legal advice.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FRAMEWORK", "SECTION_TITLES", "compliance", "limitations"]

LOW_FAITHFULNESS = 0.5  # circuit faithfulness below this: the circuit explains too little
MARGIN = 0.1  # real minus random-control faithfulness below this: not specific
HIGH_FVU = 0.3  # SAE fraction of variance unexplained above this: a poor reconstruction
LOW_CE_RECOVERED = 0.7  # SAE loss recovered below this
LOW_SELECTIVITY = 0.05  # probe accuracy minus control accuracy below this
NEAR_CHANCE = 0.6  # detector AUROC below this
BROKEN = 0.5  # compressed logit difference below this share of the full model's
PERFORMS = 0.5  # a clean logit difference (nats) below this: the model does not do the task
SIGNIFICANT = 0.05  # a permutation p-value against the control at or above this: not shown

SECTION_TITLES = (
    "Scope and model identity",
    "Intended use and behaviours examined",
    "Methods",
    "Findings",
    "Validation",
    "Anomaly screening",
    "Compression sensitivity",
    "Limitations and negative results",
    "Compliance mapping",
    "Reproducibility manifest",
)

FRAMEWORK = {
    "NIST MEASURE 2.1": "test sets, metrics and tools used in evaluation are documented",
    "NIST MEASURE 2.3": "performance is measured and demonstrated for deployment-like conditions",
    "NIST MEASURE 2.5": "the system is shown valid and reliable; limits of generalisation documented",
    "NIST MEASURE 2.7": "security and resilience are evaluated and documented",
    "NIST MEASURE 2.8": "transparency and accountability risks are examined and documented",
    "NIST MEASURE 2.9": "the model is explained, validated and documented, and its output "
    "interpreted in context",
    "NIST MEASURE 2.13": "the effectiveness of the evaluation metrics and processes is evaluated",
    "EU AI Act Annex IV 2(b)": "design specifications: the general logic of the system and its "
    "algorithms, key design choices, expected output",
    "EU AI Act Annex IV 3": "monitoring, functioning and control: capabilities and limitations in "
    "performance, foreseeable unintended outcomes and sources of risk, input data specifications",
}

MAPPING = {  # section number -> framework items it informs
    1: ("NIST MEASURE 2.8", "EU AI Act Annex IV 2(b)"),
    2: ("NIST MEASURE 2.3", "EU AI Act Annex IV 3"),
    3: ("NIST MEASURE 2.1", "EU AI Act Annex IV 2(b)"),
    4: ("NIST MEASURE 2.9", "EU AI Act Annex IV 2(b)"),
    5: ("NIST MEASURE 2.5", "NIST MEASURE 2.9", "NIST MEASURE 2.13"),
    6: ("NIST MEASURE 2.7", "EU AI Act Annex IV 3"),
    7: ("NIST MEASURE 2.5", "EU AI Act Annex IV 3"),
    8: ("NIST MEASURE 2.5", "EU AI Act Annex IV 3"),
    9: ("NIST MEASURE 2.8",),
    10: ("NIST MEASURE 2.1", "EU AI Act Annex IV 3"),
}


def _tasks(data: dict[str, Any], out: list[dict[str, str]]) -> None:
    for name, t in data.get("tasks", {}).items():
        if "skipped" in t:
            out.append({"topic": f"task {name}", "text": f"not analysed: {t['skipped']}"})
            continue
        clean, corrupt = t["clean_logit_diff"], t["corrupt_logit_diff"]
        if not t.get("performs", clean >= PERFORMS and clean > corrupt):
            out.append({"topic": f"task {name}", "text": (
                f"the model fails this task: clean logit difference {clean:.2f} (corrupted "
                f"{corrupt:.2f}, needed {PERFORMS}); its circuit explains a behaviour the model "
                "does not show")})  # fmt: skip
        f = t["circuit"]["faithfulness"]
        if f is not None and f < LOW_FAITHFULNESS:
            out.append({"topic": f"circuit {name}", "text": (
                f"low faithfulness: the {t['circuit']['n_edges']}-edge circuit recovers {f:.2f} "
                f"of the logit difference (below {LOW_FAITHFULNESS})")})  # fmt: skip


def _validation(data: dict[str, Any], out: list[dict[str, str]]) -> None:
    for name, v in data.get("validation", {}).items():
        rand = max(v["random_faithfulness"])
        if v["faithfulness"] is not None and v["faithfulness"] - rand < MARGIN:
            out.append({"topic": f"circuit {name}", "text": (
                f"not specific: faithfulness {v['faithfulness']:.2f} against {rand:.2f} for the "
                f"best random circuit of the same size")})  # fmt: skip
        a = v["ablation"]
        p = a.get("p_vs_controls")
        if a["change"] >= a["control_mean_change"]:
            out.append({"topic": f"heads {name}", "text": (
                f"ablating the top heads by DLA ({a['heads']}) changes the logit difference by "
                f"{a['change']:+.2f}, no more than random heads ({a['control_mean_change']:+.2f})")})  # fmt: skip
        elif p is not None and p >= SIGNIFICANT:
            out.append({"topic": f"heads {name}", "text": (
                f"ablating the top heads by DLA ({a['heads']}) changes the logit difference by "
                f"{a['change']:+.2f} against {a['control_mean_change']:+.2f} for random heads, "
                f"but not significantly on these prompts (paired permutation p = {p:.2g})")})  # fmt: skip


def _analyses(data: dict[str, Any], out: list[dict[str, str]]) -> None:
    lens = data.get("lens", {}).get("tuned_lens")
    if lens and not lens["tuned_better_at_every_layer_but_last"]:
        out.append({"topic": "tuned lens", "text": "not closer to the final distribution than "
                    "the logit lens at every layer (held-out KL)"})  # fmt: skip
    sae = data.get("sae", {}).get("sae", {}).get("scores")
    if sae and (sae["fvu"] > HIGH_FVU or sae["ce_loss_recovered"] < LOW_CE_RECOVERED):
        out.append({"topic": "SAE", "text": (
            f"a poor dictionary: FVU {sae['fvu']:.2f}, loss recovered "
            f"{sae['ce_loss_recovered']:.2f}; features read from it describe the model loosely")})  # fmt: skip
    for s in data.get("probes", {}).get("sites", []):
        sel = s.get("selectivity")
        if sel is not None and sel < LOW_SELECTIVITY:
            out.append({"topic": f"probe {s['site']}", "text": (
                f"selectivity {sel:.2f} (accuracy {s['accuracy']:.2f}, control "
                f"{s['control_accuracy']:.2f}): the probe may read the words, not a feature")})  # fmt: skip


def _screening(data: dict[str, Any], cfg: Any, out: list[dict[str, str]]) -> None:
    an = data.get("anomaly")
    for name, s in (an or {}).get("sets", {}).items():
        vs = s.get("vs_clean")
        if vs and vs["auroc"] < NEAR_CHANCE:
            out.append({"topic": f"detector on {name}", "text": (
                f"near chance: AUROC {vs['auroc']:.2f} against the clean set")})  # fmt: skip
        if name == "clean" and s["flagged_share"] > 2 * cfg.fpr + 0.05:
            out.append({"topic": "detector on clean", "text": (
                f"flags {s['flagged_share']:.0%} of the clean set, above its calibrated "
                f"{cfg.fpr:.0%}: the trusted data does not match this deployment")})  # fmt: skip
    for r in (data.get("compress") or {}).get("rows", []):
        full = r["full_logit_diff"]
        if full >= PERFORMS and r["logit_diff"] < BROKEN * full:
            out.append({"topic": f"compression {r['task']}", "text": (
                f"at {r['bits']:g} bits the logit difference falls to {r['logit_diff']:.2f} "
                f"from {full:.2f}")})  # fmt: skip


def limitations(data: dict[str, Any], cfg: Any) -> list[dict[str, str]]:
    """``[{"topic", "text"}]``: what the results do not support, and what was not examined."""
    out: list[dict[str, str]] = []
    _tasks(data, out)
    _validation(data, out)
    _analyses(data, out)
    _screening(data, cfg, out)
    for name, reason in sorted(data.get("skipped", {}).items()):
        out.append({"topic": name, "text": f"not examined: {reason}"})
    return out


def compliance(present: dict[int, bool]) -> dict[str, Any]:
    """Rows per section (title, present, items) and per framework item (sections informing it,
    covered by a present one), with the counts."""
    rows = [{"number": n, "title": SECTION_TITLES[n - 1], "present": present[n],
             "informs": list(MAPPING[n])} for n in range(1, 11)]  # fmt: skip
    items = []
    for item, text in FRAMEWORK.items():
        sections = [n for n in range(1, 11) if item in MAPPING[n]]
        covered = [n for n in sections if present[n]]
        items.append({"item": item, "text": text, "sections": sections, "covered_by": covered})
    return {
        "sections": rows,
        "present": sum(present.values()),
        "required": len(present),
        "framework": items,
        "items_covered": sum(bool(i["covered_by"]) for i in items),
        "items_total": len(items),
    }
