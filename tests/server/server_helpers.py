"""A copy of the built database with explanations (one an XSS payload) for the server tests."""

from __future__ import annotations

import shutil

import pytest
from features_helpers import XSS

from mechscope.features import open_db

EXPLAIN = {
    ("mlp:1", 3): "closing parentheses in Python code",
    ("mlp:1", 4): "the word cat and other pets",
    ("sae:tiny-sae", 2): "French words about cooking",
    ("mlp:1", 5): f"payload {XSS[0]} and {XSS[1]}",
}


@pytest.fixture(scope="session")
def served_db(built, tmp_path_factory):
    path = tmp_path_factory.mktemp("served") / "features.db"
    shutil.copy(built, path)
    with open_db(str(path)) as db:
        for (source, index), text in EXPLAIN.items():
            eid = db.add_explanation(source, index, "test", text)
            db.add_score(eid, "detection", 0.7, control=0.5)
        db.add_score(1, "fuzzing", None, error=XSS[1])
    return path
