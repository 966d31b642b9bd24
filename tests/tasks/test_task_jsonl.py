"""User tasks from JSONL files and load_task: the happy path and every error, each one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mechscope import MechscopeError
from mechscope.tasks import TASKS, load_task

ROWS = [
    {"clean": "The capital of France is", "corrupt": "The capital of Spain is",
     "answer": " Paris", "wrong": " Madrid"},
    {"clean": "The capital of Italy is", "corrupt": "The capital of Japan is",
     "answer": " Rome", "wrong": " Tokyo", "id": 7},
]  # fmt: skip


def write(tmp_path: Path, lines: list[str], name: str = "user.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def error(tmp_path_or_name, tokenizer, lines: list[str] | None = None, **kwargs) -> str:
    target = write(tmp_path_or_name, lines) if lines is not None else tmp_path_or_name
    with pytest.raises(MechscopeError) as exc:
        load_task(target, tokenizer, **kwargs)
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_user_task_loads(tmp_path: Path, smol_tokenizer) -> None:
    path = write(tmp_path, [json.dumps(r) for r in ROWS] + [""])
    task = load_task(path, smol_tokenizer)
    assert task.name == "user" and task.answer == [" Paris", " Rome"]
    assert task.meta["extra"] == [{}, {"id": 7}]
    assert len(load_task(str(path), smol_tokenizer, n=1)) == 1
    batch = task.tokenize(smol_tokenizer, require_uniform=True)
    assert batch.answer_ids.tolist()[0] == smol_tokenizer(" Paris")["input_ids"][0]


def test_user_task_of_token_ids(tmp_path: Path) -> None:
    row = {"clean": [1, 2, 3], "corrupt": [1, 5, 3], "answer": 4, "wrong": 6}
    task = load_task(write(tmp_path, [json.dumps(row)]), None)
    assert task.clean == [(1, 2, 3)] and task.tokenize().answer_ids.tolist() == [4]


def test_file_errors(tmp_path: Path, smol_tokenizer) -> None:
    tok = smol_tokenizer
    assert "not found" in error(tmp_path / "nope.jsonl", tok)
    assert "is empty" in error(tmp_path, tok, ["", "  "])
    message = error(tmp_path, tok, [json.dumps(ROWS[0]), "{'clean': 1}"])
    assert "line 2 is not valid JSON" in message
    assert "line 1 is a JSON list" in error(tmp_path, tok, ["[1, 2]"])
    bad = {k: v for k, v in ROWS[0].items() if k != "wrong"}
    assert "line 1 lacks 'wrong'" in error(tmp_path, tok, [json.dumps(bad)])
    assert "options corruption" in error(
        write(tmp_path, [json.dumps(ROWS[0])]), tok, corruption="abc"
    )


def test_file_token_errors(tmp_path: Path, smol_tokenizer) -> None:
    tok = smol_tokenizer
    long_answer = {**ROWS[0], "answer": " Parisian capital"}
    assert "answer 0 ' Parisian capital' is" in error(tmp_path, tok, [json.dumps(long_answer)])
    unequal = {**ROWS[0], "corrupt": "The capital of the United Kingdom is"}
    message = error(tmp_path, tok, [json.dumps(ROWS[1]), json.dumps(unequal)])
    assert "clean prompt 1 is 5 tokens" in message and "equal lengths" in message
    assert load_task(
        write(tmp_path, [json.dumps(unequal)]), tok, require_same_length=False
    ).corrupt == [unequal["corrupt"]]


def test_unknown_task_lists_the_names(smol_tokenizer) -> None:
    message = error("ioii", smol_tokenizer)
    assert all(name in message for name in TASKS) and ".jsonl" in message


def test_bad_bytes_and_control_characters(tmp_path: Path, smol_tokenizer) -> None:
    """Non-UTF-8 bytes and a raw control character: one line with the file's line and column."""
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(ROWS[0]).encode() + b'\n{"clean": "Caf\xe9"}\n')
    assert "bad.jsonl line 2 is not UTF-8 text (byte 0xe9 at byte 15)" in error(
        path, smol_tokenizer
    )
    line = '{"clean": "When Mary and John went to\tthe store", "corrupt": "x"}'
    column = line.index("\t") + 1
    message = error(tmp_path, smol_tokenizer, [json.dumps(ROWS[0]), line])
    assert f"line 2 is not valid JSON at column {column} (raw control character U+0009" in message
