"""``mechscope neurons`` on a tiny saved model and a small text corpus."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from mechscope.cli.main import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def text_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mechscope.report import DEFAULT_PROMPTS

    words = sorted({w for p in DEFAULT_PROMPTS for w in p.replace(",", " , ").split()})
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "words.txt"
    path.write_text(" ".join(rng.choice(words) for _ in range(600)))
    return path


def test_neurons_json_and_html(tiny_folder: Path, text_file: Path, tmp_path: Path) -> None:
    out, page = tmp_path / "n.json", tmp_path / "n.html"
    result = run(
        "neurons", "-m", str(tiny_folder), "--layer", "1", "--top-neurons", "3", "--top", "4",
        "--tokens", "320", "--seq-len", "16", "--corpus", str(text_file),
        "--json", str(out), "--html", str(page), "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert {"model", "layer", "site", "tokens", "neurons"} <= set(data)
    assert data["layer"] == 1 and data["site"] == "blocks.1.mlp.hook_post"
    assert data["tokens"] == 320 and len(data["summary"]) == 80  # every neuron of the layer
    maxima = sorted((s["max"] for s in data["summary"]), reverse=True)
    assert [n["max"] for n in data["neurons"]] == maxima[:3]
    for n in data["neurons"]:
        assert {"index", "max", "top", "histogram", "promotes", "suppresses"} <= set(n)
        assert len(n["top"]) == 4 and n["top"][0]["value"] == n["max"]
        assert {"text", "tokens", "acts", "position", "value"} <= set(n["top"][0])
        # 20 windows of 16: the first position of each is left out of the statistics
        assert sum(n["histogram"]["counts"]) == 300 and len(n["promotes"]) == 10
        assert all(t["position"] >= 1 for t in n["top"])
    html = page.read_text()
    assert html.count("<svg") == 3 and 'class="peak"' in html
    assert "http" not in html.replace("http://www.w3.org/2000/svg", "")
    assert f"neuron {data['neurons'][0]['index']}" in result.stdout


def test_chosen_neurons(tiny_folder: Path, text_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "n.json"
    result = run(
        "neurons", "-m", str(tiny_folder), "-l", "0", "--neurons", "5,0,17", "-k", "2",
        "--tokens", "64", "--seq-len", "8", "--corpus", str(text_file), "--json", str(out), "-q",
        "--include-first",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert [n["index"] for n in data["neurons"]] == [5, 0, 17]
    assert data["include_first"] is True  # every position counted: 8 windows of 8
    assert all(sum(n["histogram"]["counts"]) == 64 for n in data["neurons"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--neurons", "1", "--top-neurons", "2"], "either --neurons"),
        (["--neurons", "1,x"], "bad neuron list"),
        (["--neurons", "80"], "neuron 80 is out of range"),
        (["--layer", "3"], "layer 3 is out of range"),
        (["--corpus", "missing.txt"], "corpus file not found"),
        (["--top", "0"], "must be positive"),
    ],
)
def test_bad_input_is_one_line(tiny_folder: Path, text_file: Path, args, message) -> None:
    base = ["neurons", "-m", str(tiny_folder), "--tokens", "64", "--seq-len", "8", "-q"]
    if "--layer" not in args:
        base += ["--layer", "0"]
    if "--corpus" not in args:
        base += ["--corpus", str(text_file)]
    result = run(*base, *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
