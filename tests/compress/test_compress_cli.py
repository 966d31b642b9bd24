"""``mechscope compress``: a run on a tiny model, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mechscope.cli.main import cli
from mechscope.models.tiny import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "llama"
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["compress", *args, "-q"])


def test_compress_writes_a_loadable_folder(folder: Path, tmp_path: Path) -> None:
    out, js = tmp_path / "out", tmp_path / "c.json"
    r = run("-m", str(folder), "--bits", "6", "--method", "uniform", "--group-size", "8",
            "--out", str(out), "--json", str(js))  # fmt: skip
    assert r.exit_code == 0, r.output
    payload = json.loads(js.read_text())
    assert payload["effective_bits"] == 6.0 and payload["recount"]["violations"] == 0
    assert (out / "packed.safetensors").is_file() and (out / "config.json").is_file()


def _one_line_error(r, match: str) -> None:  # type: ignore[no-untyped-def]
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], r.output


def test_budget_below_smallest_width(folder: Path, tmp_path: Path) -> None:
    r = run("-m", str(folder), "--bits", "2.4", "--method", "uniform", "--out", str(tmp_path / "o"))
    _one_line_error(r, "below the smallest width")


def test_unknown_method(folder: Path, tmp_path: Path) -> None:
    r = run("-m", str(folder), "--bits", "4", "--method", "magic", "--out", str(tmp_path / "o"))
    _one_line_error(r, "unknown method 'magic'")


def test_existing_output_folder(folder: Path, tmp_path: Path) -> None:
    r = run("-m", str(folder), "--bits", "4", "--method", "uniform", "--out", str(tmp_path))
    _one_line_error(r, "exists")


def test_prune_neurons_cli(folder: Path, tmp_path: Path) -> None:
    js = tmp_path / "p.json"
    r = run("-m", str(folder), "--bits", "6", "--method", "fisher", "--group-size", "8",
            "--calib-tokens", "64", "--seq-len", "16", "--prune-neurons", "0.25",
            "--out", str(tmp_path / "p"), "--json", str(js))  # fmt: skip
    assert r.exit_code == 0, r.output
    payload = json.loads(js.read_text())
    assert payload["effective_bits"] <= 6.0 and payload["histogram"]["all"]["0"] > 0
    r = run("-m", str(folder), "--bits", "6", "--method", "uniform", "--prune-neurons", "0.2",
            "--out", str(tmp_path / "q"))  # fmt: skip
    _one_line_error(r, "--prune-neurons works with the knapsack methods")


def task_file(path: Path, doable: bool) -> Path:
    """Two prompts whose answer is the tiny model's most (doable) or least likely next token."""
    from mechscope import HookedModel

    model = HookedModel(tiny_model("llama"), tiny_tokenizer())
    rows = []
    for prompt in ([5, 9, 14, 3, 27, 8], [7, 2, 33, 12, 19, 4]):
        with torch.no_grad():
            last = model.forward(torch.tensor([prompt]))[0, -1]
        good, bad = int(last.argmax()), int(last.argmin())
        answer, wrong = (good, bad) if doable else (bad, good)
        corrupt = [*prompt[:2], 40, *prompt[3:]]
        rows.append({"clean": prompt, "corrupt": corrupt, "answer": answer, "wrong": wrong})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("importance", ["eap-ig", "gradient"])
def test_circuit_method_end_to_end(folder: Path, tmp_path: Path, importance: str) -> None:
    task = task_file(tmp_path / "easy.jsonl", doable=True)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(f"w{i}" for i in range(3, 90)) * 20)
    js = tmp_path / "c.json"
    r = run("-m", str(folder), "--bits", "6", "--group-size", "8", "--protect", str(task),
            "--importance", importance, "--corpus", str(corpus), "--calib-tokens", "256", "--seq-len", "32",
            "--out", str(tmp_path / "o"), "--json", str(js))  # fmt: skip
    assert r.exit_code == 0, r.output
    payload = json.loads(js.read_text())
    assert payload["effective_bits"] <= 6.0 and payload["recount"]["violations"] == 0
    assert payload["config"]["importance"] == importance


def test_task_the_model_cannot_do(folder: Path, tmp_path: Path) -> None:
    task = task_file(tmp_path / "hard.jsonl", doable=False)
    r = run("-m", str(folder), "--bits", "6", "--group-size", "8", "--protect", str(task),
            "--out", str(tmp_path / "o"))  # fmt: skip
    _one_line_error(r, "cannot do task")
