"""On SmolLM2, a tuned lens trained with the report's budget beats the logit lens on held-out text.

Belrose et al. (2023): the tuned lens is closer to the final distribution than the logit lens at
every layer. Here: KL(final || lens) per layer, averaged over held-out windows of the built-in
corpus (test split), lower for the tuned lens at every layer but the last (the last resid_post
*is* the output, so both KLs are 0 there). Training takes about a minute on 2 CPU threads.

The held-out KL is the session report's (``held_out_kl`` of this lens on 1,024 positions, in
``report.json``): computing it again here would repeat a minute of unembedding. That the report
used this session's lens is checked from the lens's recorded training tokens; ``held_out_kl``
itself is checked against ``kl_div`` in ``test_tuned_lens.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mechscope.lenses import TunedLens

pytestmark = pytest.mark.slow


def test_tuned_lens_beats_the_logit_lens_on_held_out_text(
    report_tuned_lens: TunedLens, builtin_report: Path
) -> None:
    """``report_tuned_lens`` (tests/conftest.py) is ``train_tuned_lens(model, None,
    TrainConfig())``, trained in this session and shared with the session's report."""
    section = json.loads((builtin_report.parent / "report.json").read_text("utf-8"))["tuned_lens"]
    assert section["lens"]["tokens_trained"] == report_tuned_lens.config["tokens_trained"]
    held_out = section["held_out"]
    logit, tuned = np.asarray(held_out["logit"]), np.asarray(held_out["tuned"])
    assert held_out["tokens"] == 1024 and len(logit) == report_tuned_lens.n_layers
    worse = np.flatnonzero(tuned[:-1] >= logit[:-1])
    assert worse.size == 0, f"tuned lens not better at layers {worse}: {logit} vs {tuned}"
    assert logit[-1] < 1e-4 and tuned[-1] == logit[-1]
    assert logit[:-1].min() > 1.0  # the logit lens is far from the output before the end
