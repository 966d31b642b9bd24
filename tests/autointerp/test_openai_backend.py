"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1 that misbehaves on cue:
retries with backoff after 503, timeouts, unparseable replies, bounded concurrency, log-probs,
API keys, and one-line errors for an unknown model or a refused key."""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mechscope.autointerp.openai import OpenAIBackend
from mechscope.errors import MechscopeError


class Toy:
    """State of the toy server: calls per prompt, calls in flight, the most in flight at once."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict] = []


def _app(toy: Toy) -> Starlette:
    async def models(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != "Bearer s3cret":
            return JSONResponse({"error": "bad key"}, status_code=401)
        return JSONResponse({"data": [{"id": "toy-1"}]})

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        toy.bodies.append(body)
        prompt = body["messages"][-1]["content"]
        toy.calls[prompt] += 1
        toy.in_flight += 1
        toy.max_in_flight = max(toy.max_in_flight, toy.in_flight)
        try:
            await asyncio.sleep(0.05)
            if "FLAKY" in prompt and toy.calls[prompt] <= 2:
                return JSONResponse({"error": "overloaded"}, status_code=503)
            if "SLOW" in prompt:
                await asyncio.sleep(1.0)
            if "BADREQ" in prompt:
                return JSONResponse({"error": "context too long"}, status_code=400)
            text = "banana" if "GARBAGE" in prompt else "Yes" if "FLAKY" in prompt else "No"
            choice: dict = {"message": {"role": "assistant", "content": text}}
            if "NUMBERED" in prompt:  # answers as many texts as the schema asks, from log-probs
                schema = body["response_format"]["json_schema"]["schema"]
                k = schema["properties"]["answers"]["minItems"]
                pieces = ['{"answers": ['] + ['"', "Yes", '", '] * k
                pieces[-1] = '"]}'
                lp = [{"token": t, "top_logprobs": [{"token": "Yes", "logprob": math.log(0.7)}, {"token": "No", "logprob": math.log(0.1)}]} for t in pieces]  # fmt: skip
                choice = {"message": {"role": "assistant", "content": "".join(pieces)},
                          "logprobs": {"content": lp}}  # fmt: skip
            if "LOGPROBS" in prompt:
                top = [{"token": "Yes", "logprob": math.log(0.6)},
                       {"token": " no", "logprob": math.log(0.2)},
                       {"token": "Maybe", "logprob": math.log(0.2)}]  # fmt: skip
                choice["logprobs"] = {"content": [{"token": "Yes", "top_logprobs": top}]}
            return JSONResponse({"choices": [choice]})
        finally:
            toy.in_flight -= 1

    routes = [Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])]
    return Starlette(routes=routes)


@pytest.fixture(scope="module")
def toy_server() -> Iterator[tuple[str, Toy]]:
    toy = Toy()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app(toy), log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/v1", toy
    server.should_exit = True
    thread.join(5)


def _chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_retries_timeouts_and_unparseable_replies(toy_server, monkeypatch) -> None:
    url, toy = toy_server
    monkeypatch.setenv("TOY_KEY", "s3cret")
    backend = OpenAIBackend(url, api_key_env="TOY_KEY", concurrency=3, timeout=0.5, retries=2, backoff=0.05)  # fmt: skip
    assert backend.model == "toy-1"  # the server's only model when none is named
    prompts = ["FLAKY 1", "SLOW 1", "GARBAGE 1", "LOGPROBS 1", "BADREQ 1", "plain 1", "plain 2"]
    replies = backend.yes_no([_chat(p) for p in prompts])
    by = dict(zip(prompts, replies, strict=True))
    assert by["FLAKY 1"].p_yes == 1.0 and by["FLAKY 1"].error is None
    assert toy.calls["FLAKY 1"] == 3  # two 503s, then the answer
    assert by["SLOW 1"].p_yes is None and by["SLOW 1"].error == "timeout after 0.5 s"
    assert toy.calls["SLOW 1"] == 3  # tried, retried twice, then recorded as an error
    assert by["GARBAGE 1"].p_yes is None and "unparseable reply" in by["GARBAGE 1"].error
    assert by["LOGPROBS 1"].p_yes == pytest.approx(0.75)  # 0.6 / (0.6 + 0.2)
    assert by["BADREQ 1"].error.startswith("HTTP 400") and toy.calls["BADREQ 1"] == 1
    assert by["plain 1"].p_yes == 0.0
    assert toy.max_in_flight <= 3
    assert all(b["model"] == "toy-1" and b["temperature"] == 0 for b in toy.bodies)
    generated = backend.generate([_chat("plain 3"), _chat("SLOW 2")], max_tokens=5)
    assert generated[0].text == "No" and generated[1].error == "timeout after 0.5 s"


def test_one_line_errors_for_model_key_and_url(toy_server, monkeypatch) -> None:
    url, _ = toy_server
    monkeypatch.setenv("TOY_KEY", "s3cret")
    with pytest.raises(MechscopeError, match=r"no model 'gpt-9' \(it serves toy-1\)"):
        OpenAIBackend(url, model="gpt-9", api_key_env="TOY_KEY")
    with pytest.raises(MechscopeError, match="refused the request .HTTP 401.*--api-key-env"):
        OpenAIBackend(url)
    with pytest.raises(MechscopeError, match="NO_SUCH_VAR is not set"):
        OpenAIBackend(url, api_key_env="NO_SUCH_VAR")
    with pytest.raises(MechscopeError, match="not an http"):
        OpenAIBackend("127.0.0.1:8080")


def test_numbered_calls_send_the_schema_and_read_each_answer(toy_server, monkeypatch) -> None:
    from mechscope.autointerp.judges import LLMJudge

    url, toy = toy_server
    monkeypatch.setenv("TOY_KEY", "s3cret")
    judge = LLMJudge(OpenAIBackend(url, api_key_env="TOY_KEY", retries=0), per_call=3)
    replies = judge.detect("NUMBERED", [(" a",), (" b",), (" c",), (" d",)])  # calls of 2 + 2
    assert [r.p_yes for r in replies] == [pytest.approx(0.875)] * 4  # 0.7 / (0.7 + 0.1)
    sent = [b for b in toy.bodies if "NUMBERED" in b["messages"][-1]["content"]]
    assert len(sent) == 2 and all(b["response_format"]["type"] == "json_schema" for b in sent)
    asked = sorted(b["messages"][-1]["content"].split("\n\n")[-1] for b in sent)
    assert asked == ["1: a\n2: b", "1: c\n2: d"] and all(b["logprobs"] for b in sent)
