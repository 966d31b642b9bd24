"""Limitations and the compliance count as functions of the results (no model)."""

from __future__ import annotations

from types import SimpleNamespace

from mechscope.audit import compliance, limitations


def _task(clean: float, corrupt: float, faith: float) -> dict:
    return {"clean_logit_diff": clean, "corrupt_logit_diff": corrupt,
            "circuit": {"faithfulness": faith, "n_edges": 40}}  # fmt: skip


def _validation(faith: float, rand: list[float], change: float, control: float) -> dict:
    return {"faithfulness": faith, "random_faithfulness": rand,
            "ablation": {"heads": "L1H2", "change": change, "control_mean_change": control}}  # fmt: skip


CFG = SimpleNamespace(fpr=0.01)


def test_good_results_have_no_limitations() -> None:
    data = {
        "tasks": {"ioi": _task(3.2, -3.0, 0.85)},
        "validation": {"ioi": _validation(0.85, [0.05, 0.1], -2.5, -0.1)},
        "sae": {"sae": {"scores": {"fvu": 0.1, "ce_loss_recovered": 0.9}}},
        "probes": {"sites": [{"site": "b", "selectivity": 0.3, "accuracy": 0.9,
                               "control_accuracy": 0.6}]},
        "anomaly": {"sets": {"clean": {"flagged_share": 0.0},
                             "trigger": {"flagged_share": 1.0, "vs_clean": {"auroc": 0.99}}}},
        "compress": {"rows": [{"task": "ioi", "bits": 4.5, "logit_diff": 3.0,
                               "full_logit_diff": 3.2}]},
    }  # fmt: skip
    assert limitations(data, CFG) == []


def test_each_bad_result_is_stated_with_its_number() -> None:
    data = {
        "tasks": {"sva": _task(-0.4, 0.2, 0.3), "ioi": {"skipped": "no names"}},
        "validation": {"sva": _validation(0.3, [0.25], 0.1, -0.2)},
        "lens": {"tuned_lens": {"tuned_better_at_every_layer_but_last": False}},
        "sae": {"sae": {"scores": {"fvu": 0.45, "ce_loss_recovered": 0.9}}},
        "probes": {"sites": [{"site": "blocks.3.hook_resid_post", "selectivity": 0.01,
                               "accuracy": 0.7, "control_accuracy": 0.69}]},
        "anomaly": {"sets": {"clean": {"flagged_share": 0.2},
                             "trigger": {"flagged_share": 0.1, "vs_clean": {"auroc": 0.52}}}},
        "compress": {"rows": [{"task": "ioi", "bits": 3.0, "logit_diff": 0.4,
                               "full_logit_diff": 3.0}]},
        "skipped": {"features": "no feature database given"},
    }  # fmt: skip
    text = {lim["topic"]: lim["text"] for lim in limitations(data, CFG)}
    assert "fails this task" in text["task sva"] and "-0.40" in text["task sva"]
    assert text["task ioi"] == "not analysed: no names"
    assert "low faithfulness" in text["circuit sva"] or "not specific" in text["circuit sva"]
    assert "0.30" in text["circuit sva"]
    assert "+0.10" in text["heads sva"]
    assert "tuned lens" in text and "FVU 0.45" in text["SAE"]
    assert "selectivity 0.01" in text["probe blocks.3.hook_resid_post"]
    assert "AUROC 0.52" in text["detector on trigger"] and "20%" in text["detector on clean"]
    assert "falls to 0.40" in text["compression ioi"]
    assert text["features"] == "not examined: no feature database given"


def test_heads_no_better_than_random_by_the_permutation_test() -> None:
    """A larger drop than random heads' that the paired test cannot tell from them is stated with
    its p-value; a significant one is not a limitation."""
    v = _validation(0.85, [0.05], -1.0, -0.2)
    weak = {"validation": {"ioi": {**v, "ablation": {**v["ablation"], "p_vs_controls": 0.31}}}}
    text = {lim["topic"]: lim["text"] for lim in limitations(weak, CFG)}
    assert "not significantly" in text["heads ioi"] and "p = 0.31" in text["heads ioi"]
    strong = {"validation": {"ioi": {**v, "ablation": {**v["ablation"], "p_vs_controls": 0.008}}}}
    assert not [x for x in limitations(strong, CFG) if x["topic"] == "heads ioi"]


def test_compliance_counts_present_sections() -> None:
    full = compliance(dict.fromkeys(range(1, 11), True))
    assert (full["present"], full["required"]) == (10, 10)
    assert full["items_covered"] == full["items_total"]
    partial = compliance({**dict.fromkeys(range(1, 11), True), 5: False, 6: False, 7: False})
    assert (partial["present"], partial["required"]) == (7, 10)
    items = {i["item"]: i for i in partial["framework"]}
    assert items["NIST MEASURE 2.7"]["covered_by"] == []  # only section 6 informs it
    assert items["NIST MEASURE 2.13"]["covered_by"] == []  # only section 5 informs it
    assert partial["items_covered"] == partial["items_total"] - 2
