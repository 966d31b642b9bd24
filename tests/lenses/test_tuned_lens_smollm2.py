"""On SmolLM2, a tuned lens trained with the report's budget beats the logit lens on held-out text.

Belrose et al. (2023): the tuned lens is closer to the final distribution than the logit lens at
every layer. Here: KL(final || lens) per layer, averaged over held-out windows of the built-in
corpus (test split), lower for the tuned lens at every layer but the last (the last resid_post
*is* the output, so both KLs are 0 there). Training takes about a minute on 2 CPU threads.
"""

from __future__ import annotations

import numpy as np
import pytest

import mechscope
from mechscope.lenses import TunedLens, held_out_kl

pytestmark = pytest.mark.slow


def test_tuned_lens_beats_the_logit_lens_on_held_out_text(
    smollm2: mechscope.HookedModel, report_tuned_lens: TunedLens
) -> None:
    """``report_tuned_lens`` (tests/conftest.py) is ``train_tuned_lens(model, None,
    TrainConfig())``, trained in this session and shared with the session's report."""
    lens = report_tuned_lens
    kl = held_out_kl(smollm2, None, lens=lens, tokens=512)
    assert kl.tuned is not None and kl.tokens == 512
    worse = np.flatnonzero(kl.tuned[:-1] >= kl.logit[:-1])
    assert worse.size == 0, f"tuned lens not better at layers {worse}: {kl.logit} vs {kl.tuned}"
    assert kl.logit[-1] < 1e-4 and kl.tuned[-1] == kl.logit[-1]
    assert kl.logit[:-1].min() > 1.0  # the logit lens is far from the output before the end
