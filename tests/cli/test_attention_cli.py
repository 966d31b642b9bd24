"""``mechscope attention`` on a tiny saved model, one SmolLM2 run, and its one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import mechscope
from mechscope.cli.main import cli
from mechscope.heads import attention_patterns

PROMPT = "When Mary and John went to the store , John gave a drink to"


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def embedded(page: str) -> dict:
    match = re.search(r'<script type="application/json" class="msattn-data">(.*?)</script>', page)
    assert match, "the page embeds its weights"
    return json.loads(match.group(1))


def weights(data: dict) -> np.ndarray:
    n = len(data["tokens"])
    out = np.zeros((len(data["rows"]), data["n_heads"], n, n))
    for layer, heads in enumerate(data["rows"]):
        for head, queries in enumerate(heads):
            for q, row in enumerate(queries):
                out[layer, head, q, : len(row)] = row
    return out / data["scale"]


def test_html_and_png(tiny_folder: Path, tmp_path) -> None:
    html, png = tmp_path / "a.html", tmp_path / "a.png"
    result = run(
        "attention", "-m", str(tiny_folder), "-p", PROMPT, "--layers", "0,2",
        "--html", str(html), "--png", str(png), "--heads", "1", "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == [str(html), str(png)]
    data = embedded(html.read_text())
    assert data["layers"] == [0, 2] and data["tokens"][1] == "Mary"
    model = mechscope.load(str(tiny_folder), progress=False)
    expected = attention_patterns(model, PROMPT, layers=[0, 2]).patterns
    np.testing.assert_allclose(weights(data), expected, atol=0.5e-3 + 1e-9)
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000


def test_default_output_is_attention_html(tiny_folder: Path) -> None:
    runner = CliRunner()
    with runner.isolated_filesystem():
        result = runner.invoke(cli, ["attention", "-m", str(tiny_folder), "-p", PROMPT, "-q"])
        assert result.exit_code == 0, result.stderr
        assert result.stdout.strip() == "attention.html"
        assert len(embedded(Path("attention.html").read_text())["layers"]) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [(["-p", "  "], "empty prompt"),
     (["-p", PROMPT, "--layers", "3"], "layer 3 is out of range: the model has 3 layers"),
     (["-p", PROMPT, "--layers", "1-x"], "bad layer spec"),
     (["-p", PROMPT, "--heads", "9"], "head 9 is out of range"),
     (["-p", PROMPT, "--heads", "a"], "bad head list")],
)  # fmt: skip
def test_bad_input_is_one_line(tiny_folder: Path, args: list[str], message: str) -> None:
    result = run("attention", "-m", str(tiny_folder), *args, "-q")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


@pytest.mark.slow
def test_smollm2_ioi(tmp_path, ioi_prompt: str, cli_uses_smollm2) -> None:
    html, png = tmp_path / "ioi.html", tmp_path / "ioi.png"
    result = run(
        "attention", "-p", ioi_prompt, "--layers", "5,14-15",
        "--html", str(html), "--png", str(png), "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = embedded(html.read_text())
    assert data["layers"] == [5, 14, 15] and data["n_heads"] == 9
    assert data["tokens"][:3] == ["When", "␣Mary", "␣and"] and len(data["tokens"]) == 14
    patterns = weights(data)
    np.testing.assert_allclose(patterns.sum(-1), 1.0, atol=14 * 0.5e-3)
    assert png.stat().st_size > 10_000
