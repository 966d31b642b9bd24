"""The same checks on both backends (SQLite and a real PostgreSQL 15 server): a build gives the
very same features and examples, a build interrupted mid-pass resumes to the same database, and
the explanation / score contract, full-text search and read-only mode behave alike."""

from __future__ import annotations

import pytest
from features_helpers import build_config

from mechscope.errors import MechscopeError
from mechscope.features import build as build_module
from mechscope.features import open_db
from mechscope.features.build import build_features
from mechscope.features.search import search_text


class _Stop(Exception):
    pass


def _all(db) -> list:
    out = []
    for s in db.sources():
        for i in range(s["n_features"]):
            f = db.feature(s["source"], i)
            f.pop("explanations")
            out.append(f)
    return out


def test_interrupted_build_resumes_to_the_reference(db_url, tiny, fx, built, monkeypatch) -> None:
    real = build_module.capture_sites
    calls = []

    def fail_on_the_seventh(*args):
        calls.append(1)
        if len(calls) == 7:
            raise _Stop  # a crash in the middle of the pass (after checkpoints)
        return real(*args)

    monkeypatch.setattr(build_module, "capture_sites", fail_on_the_seventh)
    with pytest.raises(_Stop):
        build_features(tiny, build_config(fx), db_url, checkpoint_seconds=0)
    monkeypatch.setattr(build_module, "capture_sites", real)
    with open_db(db_url, readonly=True) as db:
        assert db.meta()["status"] == "building" and db.sources()
    summary = build_features(tiny, build_config(fx), db_url, checkpoint_seconds=0)
    assert summary["windows"] == 150
    with open_db(db_url, readonly=True) as db, open_db(str(built), readonly=True) as ref:
        assert db.meta()["status"] == "complete"
        assert _all(db) == _all(ref)
        assert db.backend.query("SELECT count(*) FROM build_state") == [(0,)]


def test_contract_behaves_alike(db_url, tiny, fx) -> None:
    build_features(tiny, build_config(fx, n_tokens=300, k=2), db_url)
    with open_db(db_url) as db:
        a = db.add_explanation("mlp:1", 3, "test", "closing parentheses in code")
        b = db.add_explanation("mlp:1", 4, "test", "cats, dogs and other pets")
        db.add_explanation("mlp:1", 5, "test", "", error="rate limited")
        db.add_score(a, "detection", 0.9, control=0.4, details={"n": 2})
        db.add_score(b, "detection", None, error="timeout")
        with pytest.raises(MechscopeError):
            db.add_score(a, "detection", None)
        assert [r["index"] for r in search_text(db, "pets", 5)] == [4]
        assert [r["index"] for r in search_text(db, "parentheses code", 5)] == [3]
        assert search_text(db, "nothing here", 5) == []
        e = db.explanations("mlp:1", 4)[0]
        assert e["scores"][0]["status"] == "error" and e["scores"][0]["value"] is None
        assert db.explanations("mlp:1", 5)[0]["status"] == "error"
        db.set_embedding(a, [0.5, -1.0], "m")
        ids, vectors = db.embeddings("m")
        assert ids == [a] and vectors.tolist() == [[0.5, -1.0]]
    with open_db(db_url, readonly=True) as db:
        with pytest.raises(MechscopeError, match="read-only"):
            db.add_explanation("mlp:1", 1, "x", "y")
        with pytest.raises(Exception, match="read-only|readonly"):
            db.backend.execute("DELETE FROM features")


def test_a_foreign_database_is_refused(db_url) -> None:
    from mechscope.features.backends import open_backend

    b = open_backend(db_url, create=True)
    b.script("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    b.close()
    with pytest.raises(MechscopeError, match="not a mechscope feature database"):
        open_db(db_url)
