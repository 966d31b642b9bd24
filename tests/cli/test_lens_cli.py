"""``mechscope lens`` and ``mechscope lens train`` on a tiny saved model and a small corpus."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mechscope.cli.main import cli
from mechscope.report import DEFAULT_PROMPTS

PROMPT = DEFAULT_PROMPTS[0].replace(",", " ,")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def jsonl_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words = sorted({w for p in DEFAULT_PROMPTS for w in p.replace(",", " , ").split()})
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "words.jsonl"
    rows = [{"text": " ".join(rng.choice(words) for _ in range(80))} for _ in range(60)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tiny_folder: Path, jsonl_corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("lens") / "tiny.safetensors"
    result = run(
        "lens", "train", "--model", str(tiny_folder), "--tokens", "1024", "--seq-len", "32",
        "--corpus", str(jsonl_corpus), "--out", str(out), "-q",
    )  # fmt: skip
    return result, out


def test_lens_train_writes_a_lens(trained) -> None:
    result, out = trained
    assert result.exit_code == 0, result.stderr
    assert out.is_file() and "tokens/s" in result.stdout and str(out) in result.stdout


def test_lens_json_and_html_with_tuned(tiny_folder: Path, trained, tmp_path: Path) -> None:
    _, lens_file = trained
    out, page = tmp_path / "lens.json", tmp_path / "lens.html"
    result = run(
        "lens", "--model", str(tiny_folder), "--prompt", PROMPT, "--target", "Mary",
        "--tuned", str(lens_file), "--json", str(out), "--html", str(page), "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert set(data["lenses"]) == {"logit", "tuned"} == set(data["kl"])
    n_pos = len(data["str_tokens"])
    for name in ("logit", "tuned"):
        layers = data["lenses"][name]
        assert len(layers) == 3 and len(data["kl"][name]) == 3
        for row in layers:
            assert {"layer", "top", "target_rank", "target_prob", "kl", "mean_kl"} <= set(row)
            assert len(row["top"]) == n_pos and len(row["top"][0]) == 5
            assert len(row["target_rank"]) == n_pos
        assert data["kl"][name][-1] < 1e-5  # the last layer is the output
    assert data["lenses"]["logit"][-1]["target_rank"] == data["lenses"]["tuned"][-1]["target_rank"]
    assert data["target"]["token"] == "Mary" and data["tuned_lens"]["tokens_trained"] == 1024
    html = page.read_text()
    assert "data:image/png;base64," in html and html.count("<table") == 2
    assert "http" not in html
    assert "rank of 'Mary'" in result.stdout


def test_lens_without_tuned(tiny_folder: Path) -> None:
    result = run("lens", "-m", str(tiny_folder), "-p", PROMPT, "-q")
    assert result.exit_code == 0, result.stderr
    assert (
        result.stdout.splitlines()[0].startswith("layer") and len(result.stdout.splitlines()) == 4
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ([], "--prompt"),
        (["-p", PROMPT, "--target", "Mary John"], "one token"),
        (["-p", PROMPT, "--tuned", "missing.safetensors"], "no tuned lens"),
    ],
)
def test_lens_errors(tiny_folder: Path, args: list[str], match: str) -> None:
    result = run("lens", "-m", str(tiny_folder), *args, "-q")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and match in result.stderr


def test_train_needs_out(tiny_folder: Path) -> None:
    result = run("lens", "train", "-m", str(tiny_folder))
    assert result.exit_code == 2 and "--out" in result.output


def test_a_second_train_into_one_file_exits_2(tiny_folder: Path, tmp_path: Path) -> None:
    import os

    from mechscope.files import file_lock

    out = tmp_path / "lens.safetensors"
    with file_lock(out, "tuned lens training"):  # what a first run holds while it trains
        result = run("lens", "train", "-m", str(tiny_folder), "--out", str(out), "-q")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out} is in use by tuned lens ")
    assert f"(pid {os.getpid()} on " in lines[0] and not out.exists()
