"""Bad input is a one-line error naming the problem and the fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from mechscope.anomaly import FitConfig, fit_detector, read_inputs, score_texts
from mechscope.corpus import Corpus
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel


def test_detector_fitted_on_another_model(world: Any, detectors: dict[str, Any]) -> None:
    with pytest.raises(MechscopeError, match="fitted on another model") as err:
        score_texts(detectors["bad"], world.clean, world.held[:2], quiet=True)
    assert "\n" not in str(err.value)


def test_empty_trusted_set(world: Any) -> None:
    with pytest.raises(MechscopeError, match="trusted set .* is empty") as err:
        fit_detector(world.bad, Corpus.from_texts(["the red fox ."]), FitConfig(seq_len=32))
    assert "\n" not in str(err.value)
    with pytest.raises(MechscopeError, match="empty"):
        Corpus.from_texts(["", "  "])


def test_file_that_is_not_text(tmp_path: Path) -> None:
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"\x89PNG\x00\x01\x02")
    with pytest.raises(MechscopeError, match="not a text file"):
        read_inputs(binary)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(MechscopeError, match="not UTF-8"):
        read_inputs(latin)
    with pytest.raises(MechscopeError, match="not UTF-8|not a text file"):
        read_inputs(tmp_path)  # a folder holding non-text files


def test_inputs_keep_their_order(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.jsonl").write_text('{"text": "first"}\n\n{"text": "also first"}\n')
    assert read_inputs(tmp_path) == ["first", "also first", "second"]


def test_non_finite_activation(world: Any) -> None:
    hf = copy.deepcopy(world.bad.hf)
    with torch.no_grad():
        hf.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    broken = HookedModel(hf, world.tokenizer)
    with pytest.raises(MechscopeError, match="non-finite activation at blocks.1") as err:
        fit_detector(broken, Corpus.from_texts(world.trusted), FitConfig(seq_len=32, n_tokens=640))
    assert "\n" not in str(err.value)


def test_unknown_kind_and_sae_kind_without_sae(world: Any) -> None:
    corpus = Corpus.from_texts(world.trusted)
    with pytest.raises(MechscopeError, match="unknown detector kind 'gauss'"):
        fit_detector(world.bad, corpus, FitConfig(kinds=("gauss",)))
    with pytest.raises(MechscopeError, match="needs an SAE"):
        fit_detector(world.bad, corpus, FitConfig(kinds=("sae",)))
    with pytest.raises(MechscopeError, match="out of range"):
        fit_detector(world.bad, corpus, FitConfig(layers=(7,)))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_check_finite_finds_one_bad_value_at_a_real_token(value: float) -> None:
    """One reduction per token finds a single NaN, +inf or -inf (and +inf beside -inf); a bad
    value at a padded position is not an error."""
    from mechscope.anomaly.extract import _check_finite

    t = torch.randn(2, 5, 7)
    mask = torch.ones(2, 5)
    mask[1, 4] = 0
    _check_finite("x", t, mask)
    padded = t.clone()
    padded[1, 4, 3] = value
    _check_finite("x", padded, mask)  # padding: ignored
    bad = t.clone()
    bad[1, 2, 6] = value
    with pytest.raises(
        MechscopeError, match=r"non-finite activation at x \(input 1 of the batch, position 2\)"
    ):
        _check_finite("x", bad, mask)
    both = t.clone()
    both[0, 3, 0], both[0, 3, 1] = float("inf"), float("-inf")
    with pytest.raises(MechscopeError, match="position 3"):
        _check_finite("x", both, mask)
