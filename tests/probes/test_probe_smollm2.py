"""Probes on SmolLM2-135M-Instruct: the built-in "is_number" set is read at mid layers.

Digits and number words are linearly separable from other words; the control task (a random
label per token type) is harder in the middle of the network than at the embedding, so the
selectivity is positive. A smaller set (120 examples) and two sites keep the test short (the
forward stops after layer 15).
"""

from __future__ import annotations

import pytest

from mechscope.probes import PROBE_SETS, probe

pytestmark = pytest.mark.slow

SITES = ["blocks.10.hook_resid_post", "blocks.15.hook_resid_post"]


def test_is_number_is_linearly_readable_and_selective(smollm2) -> None:
    data = PROBE_SETS["is_number"](n=120)
    result = probe(smollm2, data, SITES, quiet=True)
    for s in result.scores:
        assert s.accuracy > 0.9 and s.cv_mean > 0.9, s
        assert s.baseline == pytest.approx(0.5)
        assert s.selectivity is not None and s.selectivity > 0, s
