"""Recovery scores against a known dictionary (MCC, detection precision/recall/F1, recovered) and
``mechscope sae eval --truth``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mechscope.cli.main import cli
from mechscope.errors import MechscopeError
from mechscope.sae import SAE, SAEConfig, load_truth, save_sae, score_dictionary


def unit(rows: torch.Tensor) -> torch.Tensor:
    return rows / rows.norm(dim=1, keepdim=True)


def test_exact_dictionary_permuted_scaled_and_flipped():
    truth = unit(torch.randn(10, 6, generator=torch.Generator().manual_seed(0)))
    learned = torch.cat([-3 * truth[[4, 2, 0, 1, 3, 9, 8, 7, 6, 5]], torch.zeros(0, 6)])
    s = score_dictionary(truth, learned)
    assert (
        s.mcc == pytest.approx(1.0) and s.recovered == 1.0 and s.mean_max_cos == pytest.approx(1.0)
    )
    assert s.precision == s.recall == s.f1 == 1.0


def test_hungarian_matching_counts_each_latent_once():
    """Two latents on one true feature: 'recovered' (best match) counts it once, and a true feature
    no latent covers is missed; the one-to-one matching gives the duplicate to nobody."""
    truth = torch.eye(4, dtype=torch.float64)
    learned = torch.stack(
        [truth[0], truth[0] * 0.99 + 0.141 * truth[1], truth[2], (truth[1] + truth[3]) / 2**0.5]
    )
    s = score_dictionary(truth, learned)
    # best cosines: f0 1.0, f1 0.707 (via the mixed latent), f2 1.0, f3 0.707
    assert s.recovered == pytest.approx(0.5) and s.mean_max_cos == pytest.approx(
        (2 + 2**0.5) / 4, abs=1e-3
    )
    # one-to-one: f0-l0 (1), f2-l2 (1), f1-l1 (0.141) or f1-l3, f3-the other (0.707): best sum
    cos = (unit(truth) @ unit(learned).T).abs()
    assert s.mcc == pytest.approx(float(1 + 1 + cos[1, 1] + cos[3, 3]) / 4)
    assert s.recall == 0.5 and s.precision == 0.5 and s.f1 == pytest.approx(0.5)


def test_more_latents_lower_precision_only():
    truth = unit(torch.randn(8, 16, generator=torch.Generator().manual_seed(1)))
    noise = unit(torch.randn(24, 16, generator=torch.Generator().manual_seed(2)))
    s = score_dictionary(truth, torch.cat([noise[:12], truth, noise[12:]]))
    assert s.recall == 1.0 and s.precision == pytest.approx(8 / 32)
    assert s.f1 == pytest.approx(2 * 0.25 / 1.25) and s.mcc == pytest.approx(1.0)


def test_fewer_latents_than_true_features():
    truth = torch.eye(5, dtype=torch.float64)
    s = score_dictionary(truth, truth[:2])
    assert s.mcc == pytest.approx(2 / 5) and s.recall == pytest.approx(2 / 5) and s.precision == 1.0


def test_load_truth_errors(tmp_path):
    good = tmp_path / "d.npy"
    np.save(good, np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32))
    assert load_truth(good, 4).shape == (7, 4)
    with pytest.raises(MechscopeError, match=r"shape \[7, 4\], expected \[n_features, 5\]"):
        load_truth(good, 5)
    with pytest.raises(MechscopeError, match="transpose it"):
        load_truth(good, 7)
    pickled = tmp_path / "p.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MechscopeError, match="cannot read"):
        load_truth(pickled, 4)
    bad = tmp_path / "nan.npy"
    np.save(bad, np.full((3, 4), np.nan))
    with pytest.raises(MechscopeError, match="NaN"):
        load_truth(bad, 4)
    with pytest.raises(MechscopeError, match="cannot read"):
        load_truth(tmp_path / "missing.npy", 4)


def test_cli_truth(tmp_path):
    torch.manual_seed(0)
    sae = SAE(SAEConfig(arch="topk", d_in=6, d_sae=12, k=2, normalize_scale=0.5))
    truth = sae.W_dec.detach()[[3, 1, 7]].numpy() * 2.0
    np.save(tmp_path / "truth.npy", truth)
    save_sae(sae, tmp_path / "sae")
    out = tmp_path / "scores.json"
    res = CliRunner().invoke(
        cli,
        ["sae", "eval", "--sae", str(tmp_path / "sae"), "--truth", str(tmp_path / "truth.npy"),
         "--json", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    scores = json.loads(out.read_text())
    assert scores["recall"] == 1.0 and scores["mcc"] == pytest.approx(1.0)
    assert scores["precision"] == pytest.approx(3 / 12) and "MCC" in res.output
    np.save(tmp_path / "wrong.npy", truth[:, :4])
    res = CliRunner().invoke(
        cli, ["sae", "eval", "--sae", str(tmp_path / "sae"), "--truth", str(tmp_path / "wrong.npy")]
    )
    assert res.exit_code == 2 and "expected [n_features, 6]" in res.output
    assert "Traceback" not in res.output
