"""Grokking toy and its progress measures: Fourier identities, planted logits, exact resume."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from mechscope.compare.progress_measures import (
    fourier_basis,
    frequency_norms,
    key_frequencies,
    progress_measures,
    restricted_excluded,
)
from mechscope.errors import MechscopeError
from mechscope.toys.grokking import GrokConfig, dataset, train_grokking

P = 13
SMALL = GrokConfig(p=P, d_model=16, n_heads=2, d_mlp=32, train_fraction=0.5, epochs=40,
                   checkpoint_every=10, lr=3e-3)  # fmt: skip


def test_fourier_basis_is_orthonormal() -> None:
    basis = fourier_basis(P)
    torch.testing.assert_close(basis @ basis.T, torch.eye(P, dtype=torch.float64))


def test_key_frequencies_of_a_planted_embedding() -> None:
    """An embedding built from frequencies 2 and 5 has those as its key frequencies."""
    a = torch.arange(P, dtype=torch.float64)
    cols = [torch.cos(2 * math.pi * k * a / P) for k in (2, 5)]
    cols += [torch.sin(2 * math.pi * k * a / P) for k in (2, 5)]
    w_e = torch.stack(cols, 1) @ torch.randn(4, 8, dtype=torch.float64)
    norms = frequency_norms(w_e)
    assert key_frequencies(norms, 0.999) == [2, 5]
    assert norms.pow(2).sum() == pytest.approx(w_e.pow(2).sum(), rel=1e-9)  # no constant part


def test_restricted_and_excluded_loss_on_planted_logits() -> None:
    """Logits that are exactly sum_k cos(w_k (a + b - c)) over frequencies {1, 3}: restricting
    to {1, 3} changes nothing; excluding them leaves uniform logits (loss log p)."""
    cfg = GrokConfig(p=P)
    _, labels, train = dataset(cfg)
    a = torch.arange(P, dtype=torch.float64)
    s = (a[:, None] + a[None, :]).reshape(-1, 1)
    logits = sum(8 * torch.cos(2 * math.pi * k * (s - a[None, :]) / P) for k in (1, 3))
    full_test = torch.nn.functional.cross_entropy(logits[~train], labels[~train])
    restricted, excluded = restricted_excluded(logits, labels, train, [1, 3])
    assert restricted == pytest.approx(float(full_test), abs=1e-9)
    assert excluded == pytest.approx(math.log(P), abs=1e-9)
    restricted_wrong, _ = restricted_excluded(logits, labels, train, [2])
    assert restricted_wrong > restricted + 1


def test_resume_equals_an_uninterrupted_run(tmp_path) -> None:
    straight = train_grokking(tmp_path / "a", SMALL, quiet=True)
    half = GrokConfig(**{**SMALL.__dict__, "epochs": 20})
    train_grokking(tmp_path / "b", half, quiet=True)  # stopped at epoch 20, then extended
    resumed = train_grokking(tmp_path / "b", SMALL, quiet=True)
    assert resumed["history"] == straight["history"]
    last = "checkpoints/epoch-000040.safetensors"
    for name, value in load_file(tmp_path / "a" / last).items():
        torch.testing.assert_close(load_file(tmp_path / "b" / last)[name], value)
    measures = progress_measures(tmp_path / "a", SMALL, quiet=True)
    assert measures.epochs == [10, 20, 30, 40] and len(measures.frequency_norms[0]) == 6
    assert measures.train_loss[-1] < measures.train_loss[0]


def test_other_settings_do_not_resume(tmp_path) -> None:
    train_grokking(tmp_path, GrokConfig(**{**SMALL.__dict__, "epochs": 10}), quiet=True)
    with pytest.raises(MechscopeError, match="other settings"):
        train_grokking(tmp_path, GrokConfig(**{**SMALL.__dict__, "lr": 1e-2}), quiet=True)
