"""``mechscope moe`` on a saved tiny Mixtral: the JSON shape, the HTML and PNG, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from mechscope.cli.main import cli
from mechscope.models.tiny import tiny_model, tiny_tokenizer

WORDS = ["the", "cat", "sat", "on", "mat", "1", "2", "3", ",", "."]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("moe-cli")
    tiny_model("mixtral").save_pretrained(root / "model")
    tiny_tokenizer(WORDS).save_pretrained(root / "model")
    rng = random.Random(0)
    for name, words in (("words.txt", WORDS[:5]), ("numbers.txt", WORDS[5:])):
        (root / name).write_text(" ".join(rng.choice(words) for _ in range(300)))
    return root / "model", root / "words.txt", root / "numbers.txt"


def test_moe_command_writes_the_issue_json_and_views(folders, tmp_path: Path) -> None:
    model, words, numbers = folders
    out = tmp_path / "moe.json"
    args = ["moe", "-m", str(model), "-c", str(words), "-c", str(numbers), "-n", "128",
            "--seq-len", "32", "--cka-windows", "2", "--causal-windows", "2", "--prune", "--json", str(out),
            "--html", str(tmp_path / "moe.html"), "--quiet"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    d = json.loads(out.read_text())
    assert (d["n_experts"], d["top_k"], d["n_tokens"]) == (4, 2, 256)
    assert [layer["layer"] for layer in d["layers"]] == [0, 1]
    for layer in d["layers"]:
        assert sum(layer["load"]) == d["n_tokens"] * d["top_k"]
        assert {"entropy", "coactivation", "specialisation", "similarity", "causal"} <= set(layer)
        domain = layer["specialisation"]["domain"]
        assert domain["labels"] == [str(words), str(numbers)]
    pruning = d["pruning"]
    assert set(pruning["curves"]) == {"reroute_effect", "ablate_effect", "load", "router_weight",
                                      "random", "cka_merge"}  # fmt: skip
    assert [row["n"] for row in pruning["curves"]["load"]] == [1, 2]  # down to top_k left
    v = pruning["curves"]["load"][0]["value"]["lm"]
    assert set(pruning["curves"]["load"][0]["value"]) == {"lm", "kl", "agreement"}
    assert v["low"] <= v["mean"] <= v["high"]
    assert [m["layer"] for m in pruning["merge"]] == [0, 1]
    html = (tmp_path / "moe.html").read_text()
    assert "expert load by layer and token class" in html and "<script src=" not in html
    assert "held-out windows" in html and html.count("data:image/png") == 2
    assert (tmp_path / "moe.png").read_bytes()[:4] == b"\x89PNG"


def test_a_dense_model_is_a_one_line_error(tmp_path: Path) -> None:
    tiny_model("llama").save_pretrained(tmp_path)
    tiny_tokenizer(WORDS).save_pretrained(tmp_path)
    result = CliRunner().invoke(cli, ["moe", "-m", str(tmp_path), "--quiet"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "dense MLP" in result.output


def test_a_task_and_token_classes(folders, tmp_path: Path) -> None:
    model, words, _ = folders
    task = tmp_path / "task.jsonl"
    rows = [{"clean": "the cat sat on the", "corrupt": "the mat sat on the", "answer": " mat",
             "wrong": " cat"}, {"clean": "1 2 3 1 2", "corrupt": "3 2 1 3 2", "answer": " 3",
             "wrong": " 1"}]  # fmt: skip
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"the": "article", "cat": "noun", "mat": "noun"}))
    out = tmp_path / "moe.json"
    args = ["moe", "-m", str(model), "-c", str(words), "-n", "64", "--seq-len", "32",
            "--cka-windows", "0", "--causal-windows", "1", "--task", str(task), "--json", str(out),
            "--classes", str(classes), "--quiet"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    d = json.loads(out.read_text())
    assert d["metric"] == "logit_diff" and "base_task" in d
    spec = d["layers"][0]["specialisation"]["token_class"]
    assert spec["labels"] == ["article", "noun", "other"]
    for layer in d["layers"]:
        assert len(layer["causal"]["task_delta_ablate"]) == d["n_experts"]
        assert any(v != 0 for v in layer["causal"]["task_delta_reroute"])
