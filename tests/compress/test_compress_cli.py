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


def test_task_the_model_cannot_do(folder: Path, tmp_path: Path) -> None:
    from mechscope import HookedModel

    model = HookedModel(tiny_model("llama"), tiny_tokenizer())
    prompt = [5, 9, 14, 3, 27, 8]
    corrupt = [5, 9, 40, 3, 27, 8]
    with torch.no_grad():
        last = model.forward(torch.tensor([prompt]))[0, -1]
    good, bad = int(last.argmax()), int(last.argmin())  # answer the least likely token
    rows = [{"clean": prompt, "corrupt": corrupt, "answer": bad, "wrong": good}]
    task = tmp_path / "hard.jsonl"
    task.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = run("-m", str(folder), "--bits", "6", "--group-size", "8", "--protect", str(task),
            "--out", str(tmp_path / "o"))  # fmt: skip
    _one_line_error(r, "cannot do task")
