"""``anomaly fit`` resumes after kill -9: a fit killed mid-run and resumed equals an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

import mechscope.anomaly.fit as fit_module
from mechscope.anomaly import FitConfig, fit_detector
from mechscope.anomaly.checkpoint import checkpoint_path
from mechscope.errors import MechscopeError

SETUP = """
import random
from mechscope.corpus import Corpus
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer
from mechscope.anomaly import FitConfig

WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
rng = random.Random(0)
TEXTS = [" ".join(rng.choice(WORDS) for _ in range(60)) for _ in range(40)]
MODEL = HookedModel(tiny_model("llama", seed=0), tiny_tokenizer(WORDS))
CORPUS = Corpus.from_texts(TEXTS)
CONFIG = FitConfig(kinds=("mahalanobis", "lof", "dla", "contrast", "update", "attention"),
                   seq_len=16, batch_size=4, combine="mean", ensemble=("mahalanobis", "attention"),
                   n_tokens=16 * 4 * 12, lof_sample=64, lof_k=5, lof_dims=8,
                   contrast=(("alpha beta gamma", "alpha beta delta"), ("eta zeta", "eta theta")))
"""

CHILD = """
import sys, time
import mechscope.anomaly.fit as fit_module
from mechscope.anomaly import fit_detector

real = fit_module.extract

def slow(*args, **kwargs):  # leaves time to kill the fit mid-way (sleeping costs no CPU)
    time.sleep(0.25)
    return real(*args, **kwargs)

fit_module.extract = slow
fit_detector(MODEL, CORPUS, CONFIG, quiet=True, checkpoint=sys.argv[1], checkpoint_every=1)
print("finished")
"""


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    scope: dict[str, Any] = {}
    exec(SETUP, scope)  # noqa: S102 - the same definitions as the child process
    return scope


def _batches_in(path: Path) -> int:
    if not path.is_file():
        return 0
    with safe_open(str(path), "pt") as handle:
        return int(json.loads(handle.metadata()["state"])["counters"]["batches"])


def test_a_fit_killed_mid_run_resumes_to_the_uninterrupted_detector(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    ckpt = checkpoint_path(tmp_path / "det")
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(SETUP) + textwrap.dedent(CHILD))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, str(script), str(ckpt)], env=env)
    try:
        deadline = time.monotonic() + 120
        while _batches_in(ckpt) < 3 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    done = _batches_in(ckpt)
    assert 3 <= done < 12  # killed mid-run, after some checkpoints

    calls = []
    real = fit_module.extract

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    model, corpus, config = setup["MODEL"], setup["CORPUS"], setup["CONFIG"]
    fit_module.extract = counting
    try:
        resumed = fit_detector(model, corpus, config, quiet=True, checkpoint=ckpt)
    finally:
        fit_module.extract = real
    fresh = fit_detector(model, corpus, config, quiet=True)
    assert set(resumed.tensors) == set(fresh.tensors)
    for key, value in fresh.tensors.items():
        assert torch.equal(resumed.tensors[key], value), key
    assert resumed.calibration == fresh.calibration
    fitting_batches = 12 - done  # batches run after the resume (every batch holds fitting rows)
    assert len(calls) == fitting_batches  # the checkpointed batches were not run again
    assert _batches_in(ckpt) == 12


def test_a_checkpoint_of_other_settings_is_refused(setup: dict[str, Any], tmp_path: Path) -> None:
    ckpt = tmp_path / "c.safetensors"
    model, corpus = setup["MODEL"], setup["CORPUS"]
    small = FitConfig(kinds=("mahalanobis",), seq_len=16, batch_size=4, n_tokens=16 * 4 * 3)
    fit_detector(model, corpus, small, quiet=True, checkpoint=ckpt)
    other = FitConfig(kinds=("mahalanobis",), seq_len=16, batch_size=4, n_tokens=16 * 4 * 3, seed=1)
    with pytest.raises(MechscopeError, match="differs in seed"):
        fit_detector(model, corpus, other, quiet=True, checkpoint=ckpt)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(MechscopeError, match="not a readable fit checkpoint"):
        fit_detector(model, corpus, small, quiet=True, checkpoint=ckpt)
