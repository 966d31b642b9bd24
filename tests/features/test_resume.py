"""``kill -9`` during a build, then the same build again: it resumes from the checkpoint and the
database equals an uninterrupted build's, row for row."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict

from features_helpers import build_config

# the child slows each batch down so the test can kill it in the middle of the pass
CHILD = """
import json, sys, time
import mechscope
from mechscope.features import build
from mechscope.features.build import BuildConfig, build_features
real = build.capture_sites
def slow(*args):
    time.sleep(0.15)
    return real(*args)
build.capture_sites = slow
cfg = json.loads(sys.argv[1])
cfg["sources"] = tuple(cfg["sources"])
model = mechscope.load(cfg["model"], progress=False)
build_features(model, BuildConfig(**cfg), sys.argv[2], checkpoint_seconds=0)
"""

TABLES = {
    "meta": "key", "sources": "source", "vocab": "id", "features": "source, idx",
    "examples": "source, idx, kind, slot", "peak_tokens": "token_id, source, idx",
    "build_state": "name",
}  # fmt: skip


def dump(path) -> dict[str, list]:
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY {k}").fetchall() for t, k in TABLES.items()}  # fmt: skip
    finally:
        conn.close()


def batches_done(path) -> int:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        rows = conn.execute("SELECT data FROM build_state WHERE name = 'progress'").fetchall()
        conn.close()
    except sqlite3.Error:
        return 0
    return json.loads(rows[0][0])["batches"] if rows else 0


def test_kill_9_then_resume_gives_the_uninterrupted_database(fx, tiny, built, tmp_path) -> None:
    from mechscope.features.build import build_features

    cfg = build_config(fx)
    out = tmp_path / "killed.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(asdict(cfg)), str(out)], env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while batches_done(out) < 3:
            assert child.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "the build made no checkpoint"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    done = batches_done(out)
    assert 3 <= done < 19  # killed in the middle: 2400 tokens are 19 batches of 8 x 16
    assert dict(dump(out)["meta"])["status"] == "building"
    summary = build_features(tiny, cfg, str(out))
    assert summary["status"] == "complete" and summary["windows"] == 150
    resumed, reference = dump(out), dump(built)
    for table in TABLES:
        assert resumed[table] == reference[table], table
    assert resumed["build_state"] == []
    conn = sqlite3.connect(out)
    assert conn.execute("PRAGMA freelist_count").fetchall() == [(0,)]  # checkpoints given back
    conn.close()
