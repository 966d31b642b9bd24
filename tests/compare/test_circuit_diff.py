"""Circuit diff: a model against a copy with one attention head's output removed, and a model
against its compressed export (``mechscope compress``'s folder, read from its packed codes)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from click.testing import CliRunner

from mechscope.circuits import attribute
from mechscope.cli.main import cli
from mechscope.compare.circuit_diff import diff_circuits
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer
from mechscope.tasks.base import TaskBatch
from mechscope.viz.compare import circuit_diff_page

LAYER, HEAD = 1, 2


def _batch() -> TaskBatch:
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(2, 101, (4, 6), generator=g)
    corrupt = clean.clone()
    corrupt[:, [1, 3]] = torch.randint(2, 101, (4, 2), generator=g)
    mask = torch.ones(4, 6, dtype=torch.long)
    answers = torch.randint(2, 101, (2, 4), generator=g)
    last = torch.full((4,), 5)
    return TaskBatch("toy", clean, corrupt, mask, mask, answers[0], answers[1], last, last)


def _without_head(hf: torch.nn.Module) -> torch.nn.Module:
    out = copy.deepcopy(hf)
    o_proj = out.model.layers[LAYER].self_attn.o_proj.weight  # [d_model, n_heads * d_head]
    d_head = out.config.head_dim
    with torch.no_grad():
        o_proj[:, HEAD * d_head : (HEAD + 1) * d_head] = 0
    return out


@pytest.fixture(scope="module")
def models() -> tuple[HookedModel, HookedModel]:
    hf = tiny_model("llama")
    return HookedModel(hf), HookedModel(_without_head(hf))


def test_removed_head_loses_exactly_its_out_edges(models) -> None:
    a, b = models
    batch = _batch()
    scored_a, scored_b = attribute(a, batch, method="eap"), attribute(b, batch, method="eap")
    n = scored_a.total_edges // 4
    diff = diff_circuits(scored_a.top_n(n), scored_b.top_n(n), scored_a, scored_b)
    name = f"a{LAYER}.h{HEAD}"
    out_edges = [e for e in diff.edges if e["src"] == name]
    assert out_edges and all(e["status"] == "lost" and e["score_b"] == 0 for e in out_edges)
    assert name in diff.nodes["lost"] or name in diff.nodes["shared"]  # still read (its input)
    counts = diff.counts()
    assert counts["edges_shared"] + counts["edges_lost"] == n
    assert counts["edges_shared"] + counts["edges_added"] == n
    same = diff_circuits(scored_a.top_n(n), scored_a.top_n(n))
    assert same.counts()["edges_shared"] == n and not same.nodes["lost"] + same.nodes["added"]
    page = circuit_diff_page(diff.to_dict(), "model", "copy", "toy")
    assert "#b2182b" in page and "<svg" in page and "http" not in page.split("<svg", 1)[1][:200]


def test_compare_cli_circuit_diff(models, tmp_path) -> None:
    a, b = models
    for name, model in (("a", a), ("b", b)):
        model.hf.save_pretrained(tmp_path / name)
        tiny_tokenizer().save_pretrained(tmp_path / name)
    task = tmp_path / "task.jsonl"
    batch = _batch()
    rows = [
        {"clean": c.tolist(), "corrupt": k.tolist(), "answer": int(x), "wrong": int(y)}
        for c, k, x, y in zip(batch.clean_tokens, batch.corrupt_tokens, batch.answer_ids,
                              batch.wrong_ids, strict=True)
    ]  # fmt: skip
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, html = tmp_path / "c.json", tmp_path / "c.html"
    args = ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--no-similarity"]
    args += ["--circuit", str(task), "--circuit-n", "4", "--circuit-edges", "60"]
    result = CliRunner().invoke(cli, [*args, "--json", str(out), "--circuit-html", str(html), "-q"])
    assert result.exit_code == 0, result.output
    diff = json.loads(out.read_text())["circuit_diff"]
    assert all(e["status"] == "lost" for e in diff["edges"] if e["src"] == f"a{LAYER}.h{HEAD}")
    assert html.read_text().count("<svg") == 1


def _write_task(path, batch: TaskBatch) -> None:
    rows = [
        {"clean": c.tolist(), "corrupt": k.tolist(), "answer": int(x), "wrong": int(y)}
        for c, k, x, y in zip(batch.clean_tokens, batch.corrupt_tokens, batch.answer_ids,
                              batch.wrong_ids, strict=True)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_compare_cli_circuit_diff_against_a_compressed_export(tmp_path) -> None:
    """`mechscope compare MODEL EXPORT --circuit`: the export of `compress` (4 effective bits: 2-bit
    codes in groups of 16) is read from its packed codes, every edge of its circuit carries the
    export's own attribution score, and the quantization moved most scores."""
    import mechscope
    from mechscope.circuits import discover
    from mechscope.cli.tasks import load_task_batch, task_metric
    from mechscope.compress import CompressConfig, compress

    hf = tiny_model("llama")
    HookedModel(hf).hf.save_pretrained(tmp_path / "a")
    tiny_tokenizer().save_pretrained(tmp_path / "a")
    g = torch.Generator().manual_seed(0)
    calib = [torch.randint(2, 101, (4, 24), generator=g) for _ in range(2)]
    victim = HookedModel(copy.deepcopy(hf), tiny_tokenizer())
    compress(
        victim, CompressConfig(bits=4.0, method="uniform", group_size=16), tmp_path / "x", calib
    )
    (tmp_path / "x" / "model.safetensors").unlink()  # only the packed form is left to read
    task = tmp_path / "task.jsonl"
    _write_task(task, _batch())
    out = tmp_path / "c.json"
    args = ["compare", str(tmp_path / "a"), str(tmp_path / "x"), "--no-similarity", "-q"]
    args += [
        "--circuit",
        str(task),
        "--circuit-n",
        "4",
        "--circuit-edges",
        "60",
        "--json",
        str(out),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    diff = json.loads(out.read_text())["circuit_diff"]
    export = mechscope.load(str(tmp_path / "x"), progress=False)
    assert export.provenance["source"] == "packed"
    batch = load_task_batch(export, str(task), 4, 0)
    run = discover(export, batch, task_metric(export, batch, "logit_diff"), edges=60, curve=())
    own = diff_circuits(run.circuit, run.circuit, run.scored, run.scored).edges
    want = {(e["src"], e["dst"]): e["score_a"] for e in own}
    in_b = [e for e in diff["edges"] if e["status"] != "lost"]
    assert {(e["src"], e["dst"]) for e in in_b} == set(want)
    for e in in_b:
        assert e["score_b"] == pytest.approx(want[(e["src"], e["dst"])], rel=1e-4, abs=1e-6)
    moved = [
        e for e in diff["edges"] if abs(e["score_a"] - e["score_b"]) > 0.01 * abs(e["score_a"])
    ]
    assert len(moved) > len(diff["edges"]) // 2
