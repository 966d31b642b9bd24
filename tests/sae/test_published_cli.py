"""``mechscope sae eval`` on a Gemma Scope folder; a dictionary of the wrong width exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mechscope.cli.main import cli
from mechscope.cli.sae_eval import sae_eval
from mechscope.models.tiny import tiny_model, tiny_tokenizer

WORDS = ["When", "Mary", "and", "John", "went", "to", "the", "store", "gave", "a", "drink"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer(WORDS).save_pretrained(folder)
    return folder


def _identity_npz(root: Path, d: int) -> Path:
    """A Gemma Scope residual SAE whose latents are x+ and x- (threshold 0): recon == x."""
    folder = root / "gemma-scope-2b-pt-res" / "layer_1" / "width_16k" / "average_l0_48"
    folder.mkdir(parents=True)
    eye = np.eye(d, dtype=np.float32)
    np.savez(
        folder / "params.npz",
        W_enc=np.concatenate([eye, -eye], 1),
        W_dec=np.concatenate([eye, -eye], 0),
        b_enc=np.zeros(2 * d, np.float32),
        b_dec=np.zeros(d, np.float32),
        threshold=np.zeros(2 * d, np.float32),
    )
    return folder


def _args(model: Path, sae: Path, tmp_path: Path) -> list[str]:
    text = tmp_path / "text.txt"
    text.write_text(" ".join(WORDS * 30))
    return [
        "--model", str(model), "--sae", str(sae), "--corpus", str(text), "--tokens", "64",
        "--seq-len", "16", "--json", str(tmp_path / "eval.json"), "--quiet",
    ]  # fmt: skip


def test_sae_eval_reads_gemma_scope(tiny_folder: Path, tmp_path: Path) -> None:
    d = tiny_model("llama").config.hidden_size
    folder = _identity_npz(tmp_path, d)
    result = CliRunner().invoke(sae_eval, _args(tiny_folder, folder, tmp_path))
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["hook_name"] == "blocks.1.hook_resid_post"
    assert abs(data["ce_loss_recovered"] - 1) < 1e-4 and data["kl"] < 1e-6


def test_sae_eval_wrong_width_exits_2(tiny_folder: Path, tmp_path: Path) -> None:
    d = tiny_model("llama").config.hidden_size
    folder = _identity_npz(tmp_path, d + 4)
    result = CliRunner().invoke(cli, ["sae", "eval", *_args(tiny_folder, folder, tmp_path)])
    assert result.exit_code == 2, result.output
    assert "reads width 52 but blocks.1.hook_resid_post is 48 wide" in result.output
    assert "Traceback" not in result.output
