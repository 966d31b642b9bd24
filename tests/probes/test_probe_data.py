"""Probe data: JSONL parsing, positions, built-in sets, and one-line errors for bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from mechscope.errors import MechscopeError
from mechscope.probes import PROBE_SETS, from_rows, load_probe_data, probe, read_jsonl
from mechscope.probes.harvest import resolve_positions


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_rows_labels_and_positions(tmp_path: Path) -> None:
    rows = [
        {"text": "word1 word2 word3", "label": "a"},
        {"text": "word1 word2 word3", "label": "b", "position": 0},
        {"text": "word4 word5 word6 word7", "label": 3, "token": "word5"},
    ]
    path = write(
        tmp_path / "d.jsonl", [json.dumps(r) for r in rows[:2]] + ["", json.dumps(rows[2])]
    )
    data = read_jsonl(path)
    assert data.texts == tuple(r["text"] for r in rows)
    assert data.positions == (-1, 0, None) and data.tokens == (None, None, "word5")
    assert data.lines == (1, 2, 4)  # blank lines are skipped, numbering is the file's
    assert data.classes == (3, "a", "b")  # sorted by type name, then value
    assert data.label_ids().tolist() == [1, 2, 0]


def test_positions_resolve_against_the_tokens(tiny) -> None:
    data = from_rows(
        [
            {"text": "word1 word2 word3", "label": 0},
            {"text": "word1 word2 word3", "label": 1, "position": -3},
            {"text": "word4 word5 word6 word7", "label": 0, "token": "word5"},
            {"text": "word4 word5 word6 word7", "label": 1, "token": "word6 word7"},
            {"text": "word4 word5 word6 word7", "label": 1, "position": 1},
        ]
    )
    _, positions = resolve_positions(tiny, data)
    assert positions.tolist() == [2, 0, 1, 3, 1]


@pytest.mark.parametrize("name", sorted(PROBE_SETS))
def test_builtin_sets_are_balanced_deterministic_and_about_their_label(name: str) -> None:
    data = load_probe_data(f"builtin:{name}")
    assert len(data) == 400 and len(data.classes) == 2
    assert data.label_ids().sum() == 200  # balanced
    again = PROBE_SETS[name]()
    assert again.texts == data.texts and again.labels == data.labels
    assert len(set(data.texts)) > 300  # mostly distinct sentences
    assert PROBE_SETS[name](n=50, seed=1).texts != data.texts[:50]


def test_builtin_labels_match_their_texts() -> None:
    numbers = load_probe_data("builtin:is_number")
    for text, label in zip(numbers.texts, numbers.labels, strict=True):
        last = text.split()[-1]
        is_num = last.isdigit() or last in {
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "fifteen",
            "twenty",
            "thirty",
            "forty",
            "fifty",
        }
        assert is_num == (label == "number"), text
    tense = load_probe_data("builtin:past_tense")
    for text, label in zip(tense.texts, tense.labels, strict=True):
        assert (" will " in text or text.split(", ")[-1].split()[1].endswith("s")) == (
            label == "not_past"
        ), text
    plural = load_probe_data("builtin:plural")
    for text, label in zip(plural.texts, plural.labels, strict=True):
        subject = text.split()[1]
        assert (subject.endswith("s") or subject in {"children", "women", "men", "mice"}) == (
            label == "plural"
        ), text


BAD_LINES = [
    (['{"text": "a", "label": 1}', "{not json"], "line 2 is not valid JSON"),
    (["[1, 2]"], "line 1 is a JSON list, not an object"),
    (['{"text": "a"}'], "line 1 lacks 'label'"),
    (['{"label": 1}'], "line 1 lacks 'text'"),
    (['{"text": "", "label": 1}'], "non-empty string"),
    (['{"text": "a", "label": [1]}'], "must be a string, number or boolean"),
    (['{"text": "a", "label": null}'], "must be a string, number or boolean"),
    (['{"text": "a", "label": 1, "position": 1.5}'], "must be an integer"),
    (['{"text": "a b", "label": 1, "token": "c"}'], "does not occur in the text"),
    (['{"text": "a b", "label": 1, "token": "a", "position": 0}'], "not both"),
    (['{"text": "a", "label": 1}', '{"text": "b", "label": 1}'], "at least two classes"),
    (["", "  "], "is empty"),
    (['{"text": "a", "label": NaN}'], "line 1: NaN is not a JSON number"),
    (['{"text": "a", "label": 1}', '{"text": "b\u0007", "label": 2}'], "line 2 is not valid JSON"),
]


@pytest.mark.parametrize("lines, message", BAD_LINES)
def test_bad_files_raise_one_line_errors(tmp_path: Path, lines: list[str], message: str) -> None:
    path = write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(MechscopeError, match=message) as info:
        read_jsonl(path)
    assert "\n" not in str(info.value)


def test_missing_file_and_unknown_builtin(tmp_path: Path) -> None:
    with pytest.raises(MechscopeError, match="not found"):
        load_probe_data(str(tmp_path / "nope.jsonl"))
    with pytest.raises(
        MechscopeError, match="unknown built-in probing set 'nope'; choose one of is_number"
    ):
        load_probe_data("builtin:nope")


def test_position_out_of_range_names_the_line(tiny) -> None:
    rows = [{"text": "word1 word2", "label": i % 2} for i in range(10)]
    rows[6]["position"] = 2
    with pytest.raises(
        MechscopeError,
        match=r"line 7: position 2 is out of range for a text of 2 tokens; use -2..1",
    ):
        probe(tiny, rows, "blocks.0.hook_resid_post", quiet=True)


def test_bad_probe_arguments(tiny) -> None:
    rows = [{"text": "word1 word2", "label": i % 2} for i in range(10)]
    with pytest.raises(MechscopeError, match="unknown probe kind 'svm'"):
        probe(tiny, rows, "blocks.0.hook_resid_post", kind="svm")
    with pytest.raises(MechscopeError, match="matches no site"):
        probe(tiny, rows, "blocks.*.hook_nothing", quiet=True)
    with pytest.raises(MechscopeError, match="no position axis"):
        probe(tiny, rows, "blocks.0.attn.hook_pattern", quiet=True)


def test_binary_and_non_utf8_files(tmp_path: Path) -> None:
    binary = tmp_path / "data.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(MechscopeError, match=r"data.bin line 1 holds NUL bytes: a binary file"):
        read_jsonl(binary)
    binary.write_bytes(bytes(range(128, 256)))
    with pytest.raises(MechscopeError, match=r"data.bin line 1 is not UTF-8 text \(byte 0x80"):
        read_jsonl(binary)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "a", "label": 1}\n{"text": "caf\xe9", "label": 2}\n')
    with pytest.raises(MechscopeError, match="latin.jsonl line 2 is not UTF-8 text"):
        read_jsonl(latin)


def test_nan_labels_and_features_are_refused(tiny, random_texts) -> None:
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(random_texts(20))]
    with pytest.raises(MechscopeError, match=r'rows line 3: "label" is nan'):
        from_rows([*rows[:2], {"text": "word1", "label": float("nan")}])
    sick = copy.deepcopy(tiny)
    with torch.no_grad():  # an overflowed weight: every later activation is inf or NaN
        sick.hf.model.layers[1].mlp.down_proj.weight[0, 0] = float("inf")
    probe(sick, rows, "blocks.0.hook_resid_post", quiet=True, folds=0)  # before it: fine
    with pytest.raises(MechscopeError, match=r"blocks.1.hook_resid_post has inf/NaN activations"):
        probe(sick, rows, "blocks.1.hook_resid_post", quiet=True, folds=0)
