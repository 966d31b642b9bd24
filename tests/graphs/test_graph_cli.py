"""mechscope graph / graph verify on a saved tiny model: circuit-tracer's JSON, one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from graphkit import random_set

import mechscope
from mechscope.cli.main import cli
from mechscope.graphs.tcfiles import save_transcoders
from mechscope.models.tiny import tiny_model, tiny_tokenizer

WORDS = [
    "When",
    "Mary",
    "and",
    "John",
    "went",
    "to",
    "the",
    "store",
    ",",
    "gave",
    "a",
    "drink",
    "to",
]
PROMPT = "When Mary and John went to the store , John gave a drink to"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("graph-cli")
    tiny_model("llama").save_pretrained(root / "model")
    tiny_tokenizer(WORDS).save_pretrained(root / "model")
    model = mechscope.load(str(root / "model"), progress=False)
    save_transcoders(
        random_set(model, cross_layer=True).to(torch.float32), root / "tc", "circuit_tracer"
    )
    return root / "model", root / "tc"


def run(*args: str) -> object:
    return CliRunner().invoke(cli, ["graph", *args])


def test_graph_json_and_verify(setup, tmp_path) -> None:
    model, tc = setup
    out = tmp_path / "g.json"
    page = tmp_path / "g.html"
    res = run(
        "-m", str(model), "-t", str(tc), "-p", PROMPT, "--out", str(out), "--html", str(page), "-q"
    )
    assert res.exit_code == 0, res.output
    assert 'class="msg-wrap"' in page.read_text() and "https://" not in page.read_text()
    assert "replacement score" in res.output
    g = json.loads(out.read_text())
    assert set(g) == {"metadata", "qParams", "nodes", "links"}
    assert g["metadata"]["prompt"] == PROMPT and g["metadata"]["schema_version"] == 1
    types = {n["feature_type"] for n in g["nodes"]}
    assert {"embedding", "logit", "cross layer transcoder"} <= types
    ids = {n["node_id"] for n in g["nodes"]}
    assert all(x["source"] in ids and x["target"] in ids for x in g["links"])
    for n in g["nodes"]:
        assert re.fullmatch(r"(E|\d+)_-?\d+_\d+", n["node_id"])
    logits = [n for n in g["nodes"] if n["feature_type"] == "logit"]
    assert sum(n["is_target_logit"] for n in logits) == 1 and logits[0]["layer"] == "4"
    res = run("verify", "-m", str(model), "-t", str(tc), "--graph", str(out), "-q")
    assert res.exit_code == 0, res.output
    assert "relative error" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-memory", "1KB"], "too small for one chunk"),
        (["--max-memory", "lots"], "cannot read the memory size"),
        (["-p", " ".join(["to"] * 80)], "longer than the model's context"),
    ],
)
def test_one_line_errors(setup, tmp_path, args, message) -> None:
    model, tc = setup
    base = ["-m", str(model), "-t", str(tc), "-p", PROMPT, "--out", str(tmp_path / "g.json"), "-q"]
    res = run(*base, *args)
    assert res.exit_code == 2
    lines = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], res.output


def test_train_then_graph(setup, tmp_path) -> None:
    from mechscope.models.tiny import tiny_model as _tm  # noqa: F401  (the saved model is tiny)

    model, _ = setup
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(" ".join(WORDS[i % 12 :] + WORDS[: i % 12]) * 4 for i in range(40)))
    out = tmp_path / "tc"
    res = CliRunner().invoke(cli, ["graph", "train", "-m", str(model), "-c", str(corpus), "--out",
                                   str(out), "--d-sae", "16", "--k", "4", "--tokens", "2000",
                                   "--steps", "20", "--batch-size", "64", "--seq-len", "32", "--layout",
                                   "circuit_tracer", "-q"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (out / "config.yaml").is_file() and (out / "W_dec_2.safetensors").is_file()
    res = run(
        "-m", str(model), "-t", str(out), "-p", PROMPT, "--out", str(tmp_path / "g.json"), "-q"
    )
    assert res.exit_code == 0, res.output
