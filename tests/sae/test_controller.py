"""The sparsity controller: ReLU/JumpReLU reach a target L0 by adapting their coefficient; a fixed
coefficient turns it off; the final value is recorded and saved."""

from __future__ import annotations

import json

import pytest
import synthetic as syn
import torch

from mechscope.errors import MechscopeError
from mechscope.sae import SAE, SAEConfig, TrainConfig, fit, load_sae, save_sae
from mechscope.sae.controller import adapt, target


def data(n: int, seed: int = 2):
    return syn.batches(syn.dictionary(64, 16, seed=5), n, 256, active=2.0, seed=seed)


def small(arch: str, **kw) -> SAE:
    cfg = SAEConfig(arch=arch, d_in=16, d_sae=64, normalize_scale=1 / 3, **kw)
    return SAE(cfg, seed=1)


def test_target_schedule():
    """Geometric from the first L0 to k over the anneal fraction, then k."""
    assert target(4, 64.0, 0.0, 0.5) == pytest.approx(64.0)
    assert target(4, 64.0, 0.25, 0.5) == pytest.approx(16.0)
    assert target(4, 64.0, 0.5, 0.5) == 4.0 and target(4, 64.0, 0.9, 0.5) == 4.0
    assert target(4, 2.0, 0.1, 0.5) == 4.0  # already sparser than k: aim at k at once


def test_adapt_moves_the_coefficient_by_relative_steps():
    sae = small("relu", k=4)
    start = float(sae.coefficient)
    adapt(sae, 40.0, 0.6, gain=0.1, anneal=0.5)  # too dense: error log(41/5) > 1, clipped to 1
    assert float(sae.coefficient) == pytest.approx(start * torch.e**0.1)
    adapt(sae, 0.0, 0.6, gain=0.1, anneal=0.5)  # too sparse: log(1/5) < -1, clipped to -1
    assert float(sae.coefficient) == pytest.approx(start)
    adapt(sae, 4.0, 0.6, gain=0.1, anneal=0.5)  # on target: unchanged
    assert float(sae.coefficient) == pytest.approx(start)
    sae = small("relu", k=4)
    adapt(sae, 10.0, 0.0, gain=0.1, anneal=0.5)  # first call records the starting L0 (10)
    assert float(sae.l0_start) == 10.0 and float(sae.coefficient) == pytest.approx(start)
    adapt(sae, 1.0, 0.1, gain=0.1, anneal=0.5)  # while annealing, never loosened
    assert float(sae.coefficient) == pytest.approx(start)


@pytest.mark.parametrize("arch", ["relu", "jumprelu"])
def test_controller_reaches_target_and_freezes(arch):
    sae = small(arch, k=3)
    cfg = TrainConfig(steps=400, lr=1e-2, batch_size=256, log_every=10)
    res = fit(sae, data(400), cfg, progress=False)
    coefs = [h["coefficient"] for h in res.history]
    assert len(set(coefs[:10])) > 1  # it moved
    frozen = [c for h, c in zip(res.history, coefs) if h["step"] > 0.8 * 400]
    assert len(set(frozen)) == 1 and res.coefficient == frozen[0] == float(sae.coefficient)
    l0 = float((sae.encode(next(data(1, seed=9))) > 0).sum(-1).float().mean())
    assert abs(l0 - 3) <= 0.75, l0


@pytest.mark.parametrize(
    ("arch", "field"), [("relu", "l1_coefficient"), ("jumprelu", "l0_coefficient")]
)
def test_fixed_coefficient_turns_the_controller_off(arch, field):
    sae = small(arch, k=3, **{field: 0.123})
    assert not sae.adaptive
    res = fit(sae, data(60), TrainConfig(steps=60, lr=1e-2, log_every=10), progress=False)
    assert {h["coefficient"] for h in res.history} == {0.123} and res.coefficient == 0.123
    assert float(sae.l0_start) != float(sae.l0_start)  # NaN: the controller never ran


def test_relu_needs_a_target():
    with pytest.raises(MechscopeError, match="needs a target L0 to train: pass k"):
        fit(small("relu"), data(2), TrainConfig(steps=2), progress=False)
    fit(small("relu", l1_coefficient=0.5), data(2), TrainConfig(steps=2), progress=False)


def test_final_coefficient_is_saved_and_loaded(tmp_path):
    sae = small("jumprelu", k=3)
    res = fit(sae, data(40), TrainConfig(steps=40, lr=1e-2), progress=False)
    save_sae(sae, tmp_path)
    meta = json.loads((tmp_path / "cfg.json").read_text())["metadata"]["mechscope"]
    assert meta["sparsity_coefficient"] == res.coefficient and meta["k"] == 3
    assert meta["l0_coefficient"] is None  # still adaptive: retraining this config reproduces it
    loaded = load_sae(tmp_path)
    assert float(loaded.coefficient) == res.coefficient and loaded.cfg.k == 3
