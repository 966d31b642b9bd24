"""``mechscope heads`` on a tiny saved Llama (and once on SmolLM2): JSON = the library's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import mechscope
from mechscope.cli.main import cli
from mechscope.heads import head_scores, repeated_tokens

KEYS = ["induction", "previous_token", "duplicate_token", "attention_sink", "copy_suppression"]


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_heads_json_html_png_match_the_library(tiny_folder: Path, tmp_path: Path) -> None:
    out, html = tmp_path / "h.json", tmp_path / "h.html"
    result = run(
        "heads", "-m", str(tiny_folder), "--seqs", "6", "--seq-len", "12", "--seed", "3",
        "--top", "4", "--json", str(out), "--html", str(html), "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert set(data) >= {*KEYS, "classification", "model"}
    model = mechscope.load(str(tiny_folder), progress=False)
    expected = head_scores(model, tokens=repeated_tokens(model, 6, 12, 3))
    for key in KEYS:
        assert len(data[key]) == 3 and all(len(row) == 6 for row in data[key])
        torch.testing.assert_close(torch.tensor(data[key]), expected.scores[key])
        top = data["classification"][key]
        assert len(top) == 4
        assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
        assert top[0]["score"] == pytest.approx(max(max(row) for row in data[key]))
        assert data[key][top[0]["layer"]][top[0]["head"]] == top[0]["score"]
    text = html.read_text()
    assert "induction" in text and "<img" in text and "http" not in text
    assert html.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "induction" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seq-len", "40"], "context"),
        (["--seqs", "0"], "n_seqs"),
        (["--top", "0"], "--top"),
    ],
)
def test_heads_bad_input(tiny_folder: Path, args: list[str], message: str) -> None:
    result = run("heads", "-m", str(tiny_folder), "-q", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error:") and message in result.stderr
    assert "Traceback" not in result.stderr


def test_heads_unsupported_model(bert_folder: Path) -> None:
    result = run("heads", "-m", str(bert_folder), "-q")
    assert result.exit_code == 2 and result.stderr.startswith("error:")


@pytest.mark.slow
def test_heads_smollm2(tmp_path: Path, cli_uses_smollm2) -> None:
    out = tmp_path / "h.json"
    result = run("heads", "--seqs", "8", "--seq-len", "30", "--json", str(out), "-q")
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["model"] == "smollm2-135m"
    assert len(data["induction"]) == 30 and len(data["induction"][0]) == 9
    # measured: induction L18H6 ~0.85, previous-token L11H1 ~0.9, copy suppression L5H2 ~0.94
    assert data["classification"]["induction"][0]["score"] > 0.6
    assert data["classification"]["previous_token"][0]["score"] > 0.6
    assert data["classification"]["copy_suppression"][0]["score"] > 0.5
