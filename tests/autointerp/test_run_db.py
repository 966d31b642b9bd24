"""Explaining and scoring through a feature database: results per feature, failures stored as
errors (never scores), reruns that recompute nothing, kill -9 resumption, one-line errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mechscope.autointerp import LexicalJudge, ScoreContext, explain_features, score_features
from mechscope.autointerp.backend import Reply
from mechscope.autointerp.explainers import TokensExplainer
from mechscope.autointerp.planted import planted_examples, write_planted_db
from mechscope.autointerp.run import results
from mechscope.cli.main import cli
from mechscope.features.db import open_db

SRC = str(Path(__file__).resolve().parents[2] / "src")


class CountingJudge(LexicalJudge):
    """The lexical judge, counting detect calls; ``fail`` names explanations whose calls fail."""

    def __init__(self, fail: str = "") -> None:
        self.calls = 0
        self.fail = fail

    def detect(self, explanation: str, windows: list) -> list[Reply]:
        self.calls += 1
        if self.fail and self.fail in explanation:
            return [Reply(error="timeout after 1 s")] + super().detect(explanation, windows[1:])
        return super().detect(explanation, windows)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "planted.db"
    write_planted_db(str(path), planted_examples())
    with open_db(str(path)) as db:
        explain_features(db, "planted", range(5), TokensExplainer(), quiet=True)
    return path


def test_failed_calls_are_errors_then_retried(db_path: Path) -> None:
    with open_db(str(db_path)) as db:
        judge = CountingJudge(fail="digits")
        first = score_features(db, "planted", range(5), ["detection"], ScoreContext(judge), quiet=True)  # fmt: skip
        assert (first.done, first.errors) == (5, 2)  # digits' own score and its use as a control
        rows = {r["index"]: r for r in results(db, "planted", range(5), None)}
        assert rows[0]["errors"]["detection"].startswith("1 of 20 answers failed; first: timeout")
        assert "detection" not in rows[0]["scores"]
        assert all(r["scores"]["detection"] == 1.0 for i, r in rows.items() if "detection" in r["scores"])  # fmt: skip
        judge = CountingJudge()
        again = score_features(db, "planted", range(5), ["detection"], ScoreContext(judge), quiet=True)  # fmt: skip
        assert (again.done, again.skipped, again.errors, judge.calls) == (2, 3, 0, 4)
        rows = results(db, "planted", range(5), None)
        assert all(r["scores"]["detection"] == 1.0 and not r["errors"] for r in rows)
        third = score_features(db, "planted", range(5), ["detection"], ScoreContext(judge), quiet=True)  # fmt: skip
        assert (third.done, third.skipped) == (0, 5)


SLOW_RUN = """
import sys, time
from mechscope.autointerp import LexicalJudge, ScoreContext, score_features
from mechscope.features.db import open_db

class Slow(LexicalJudge):
    def detect(self, explanation, windows):
        time.sleep(0.4)
        return super().detect(explanation, windows)

with open_db(sys.argv[1]) as db:
    score_features(db, "planted", range(5), ["detection", "fuzzing"], ScoreContext(Slow()), quiet=True)
"""


def _ok_scores(path: Path) -> list[tuple]:
    with open_db(str(path), readonly=True) as db:
        return db.backend.query("SELECT explanation_id, scorer FROM scores WHERE status = 'ok'")


def test_kill_9_then_rerun_recomputes_nothing(db_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(db_path)], env=env)
    deadline = time.monotonic() + 120
    while len(_ok_scores(db_path)) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _ok_scores(db_path)
    done_features = len(before) // 2
    assert len(before) % 2 == 0 and 2 <= done_features < 5  # whole features, none finished yet
    judge = CountingJudge()
    with open_db(str(db_path)) as db:
        summary = score_features(db, "planted", range(5), ["detection", "fuzzing"], ScoreContext(judge), quiet=True)  # fmt: skip
    assert summary.skipped == done_features and summary.done == 5 - done_features
    assert judge.calls == 2 * (5 - done_features)  # explanation + control, remaining features only
    after = _ok_scores(db_path)
    assert len(after) == 10 and len(set(after)) == 10  # nothing lost, nothing twice


def _run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def test_cli_explain_score_json_and_one_line_errors(db_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.json"
    result = _run("score", str(db_path), "--scorer", "detection,fuzzing", "--judge", "lexical",
                  "--control", "shuffled", "--json", str(out), "--html", str(tmp_path / "s.html"), "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    html = (tmp_path / "s.html").read_text()
    assert 'src="data:image/png;base64,' in html and "the token &#34;river&#34;" in html
    assert (tmp_path / "s.png").stat().st_size > 1000
    import json

    features = json.loads(out.read_text())["features"]
    assert [f["index"] for f in features] == [0, 1, 2, 3, 4]
    assert set(features[2]) >= {"source", "index", "explanation", "scores", "control"}
    assert features[2]["explanation"] == 'the token "river"'
    assert features[2]["scores"]["fuzzing"] == 1.0 and "detection" in features[2]["control"]

    bare = tmp_path / "bare.db"
    feats = planted_examples()
    write_planted_db(str(bare), [f.__class__(f.source, f.index, f.top, f.quantile, ()) for f in feats])  # fmt: skip
    _run("explain", str(bare), "-q")
    result = _run("score", str(bare), "--scorer", "detection", "--judge", "lexical", "-q")
    assert result.exit_code == 2 and "no negative examples" in result.output
    assert len(result.output.strip().splitlines()) == 1

    result = _run("explain", str(db_path), "-e", "openai:http://127.0.0.1:9/v1", "-q")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "cannot reach the LLM server at http://127.0.0.1:9/v1/models" in result.output
    result = _run("score", str(db_path), "--scorer", "nonsense")
    assert result.exit_code == 2 and "choose from detection" in result.output
