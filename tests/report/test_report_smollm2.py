"""The default report on the built-in model: its SAE latents and neurons are features of the text,
not of the first position, and every logit effect is in one unit."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mechscope.report.sae_section import SHOW


@pytest.mark.slow
def test_report_latents_are_not_first_position_artefacts(builtin_report: Path) -> None:
    data = json.loads((builtin_report.parent / "report.json").read_text("utf-8"))
    sae = data["sae"]
    assert "skipped" not in sae and len(sae["latents"]) == SHOW
    assert sae["config"]["include_first"] is False  # trained without the first positions
    tops = [t for latent in sae["latents"] for t in latent["top"]]
    assert sum(t["position"] == 0 for t in tops) <= 0.1 * len(tops)
    for latent in sae["latents"]:  # nor tied to any other single position
        counts = Counter(t["position"] for t in latent["top"])
        assert max(counts.values()) <= 0.5 * len(latent["top"])
        assert 0.001 <= latent["density"] <= 0.05
    assert "density" in sae["picked"] and "first position left out" in sae["picked"]
    neurons = data["neurons"]
    assert all(t["position"] > 0 for n in neurons["neurons"] for t in n["top"])
    assert sae["logit_unit"] == neurons["logit_unit"]  # one unit for neurons and latents
    assert "final norm" in sae["logit_unit"]
