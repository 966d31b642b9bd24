"""``openai:URL``: any OpenAI-compatible chat-completions server (vLLM, llama.cpp, Ollama, OpenAI).

Calls run ``concurrency`` at a time on a thread pool. A call that times out, cannot connect, or
gets HTTP 408/409/429/5xx is retried up to ``retries`` times, waiting ``backoff * 2**attempt``
seconds (plus jitter); after that, or on any other HTTP error, the prompt's :class:`Reply` carries
the reason. :meth:`OpenAIBackend.check` runs once before any work: an unreachable server, a
refused key or an unknown model name is a one-line :class:`MechscopeError`, not a run of errors.
Yes/no calls ask for one token with its top log-probabilities (``logprobs``/``top_logprobs``) and
fall back to the reply's first word when the server gives none. A JSON schema given with a prompt
goes as ``response_format`` (``json_schema``, strict). Calls send no server-specific fields: a
llama.cpp server reuses the cached prefix of a slot's previous prompt by itself (``cache_prompt``
is on by default), so the shared system message and worked examples are processed once per slot.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from mechscope.autointerp.backend import Chat, Reply, p_yes_from_logprobs, p_yes_from_text
from mechscope.errors import MechscopeError

__all__ = ["OpenAIBackend"]

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


def _endpoints(url: str) -> tuple[str, str]:
    """(chat-completions URL, models URL) from a base URL, a ``/v1`` URL or the full endpoint."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        base = url[: -len("/chat/completions")]
    else:
        base = url if url.endswith("/v1") else url + "/v1"
    return base + "/chat/completions", base + "/models"


def _token_logprobs(choice: dict[str, Any]) -> tuple[Any, ...] | None:
    """(token, ((candidate, log-probability), ...)) per generated token from a chat choice's
    ``logprobs.content``; ``None`` when the server sent none or in another shape."""
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        return None
    try:
        return tuple(
            (t["token"], tuple((c["token"], float(c["logprob"])) for c in t["top_logprobs"]))
            for t in content
        )
    except (KeyError, TypeError, ValueError):
        return None


class OpenAIBackend:
    """Chat completions over HTTP with bounded concurrency, retries with backoff and timeouts."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key_env: str | None = None,
        concurrency: int = 4,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise MechscopeError(
                f"openai:{url} is not an http(s) URL: use openai:http://HOST:PORT/v1"
            )
        self.chat_url, self.models_url = _endpoints(url)
        headers = {}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise MechscopeError(
                    f"environment variable {api_key_env} is not set: export the API key in it"
                )
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(headers=headers, timeout=timeout)
        self.model, self.timeout, self.retries, self.backoff = model, timeout, retries, backoff
        self.concurrency = max(1, concurrency)
        self.check()
        self.name = f"openai:{url}#{self.model}"

    def check(self) -> None:
        """Fail in one line when the server is unreachable, refuses the key or lacks the model."""
        try:
            resp = self.client.get(self.models_url, timeout=min(self.timeout, 10.0))
        except httpx.HTTPError as exc:
            raise MechscopeError(
                f"cannot reach the LLM server at {self.models_url} ({type(exc).__name__}): "
                "start it or fix the URL"
            ) from None
        if resp.status_code in (401, 403):
            raise MechscopeError(
                f"the LLM server refused the request (HTTP {resp.status_code}): "
                "put the API key in an environment variable and name it with --api-key-env"
            )
        if resp.status_code != 200:  # some servers have no /models: the first call will tell
            if self.model is None:
                raise MechscopeError(
                    f"the LLM server lists no models (HTTP {resp.status_code}): pass --model NAME"
                )
            return
        ids = [m.get("id") for m in resp.json().get("data", []) if isinstance(m, dict)]
        if self.model is None:
            if not ids:
                raise MechscopeError("the LLM server lists no models: pass --model NAME")
            self.model = ids[0]
        elif self.model not in ids:
            raise MechscopeError(
                f"the LLM server has no model {self.model!r} (it serves {', '.join(map(str, ids))}):"
                " pass one of these with --model"
            )

    def _post(self, body: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """The JSON reply, or the reason the call failed after its retries."""
        reason = "not run"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1) * (1 + random.random() / 2))
            try:
                resp = self.client.post(self.chat_url, json={"model": self.model, **body})
            except httpx.TimeoutException:
                reason = f"timeout after {self.timeout:g} s"
                continue
            except httpx.HTTPError as exc:
                reason = f"connection failed ({type(exc).__name__})"
                continue
            if resp.status_code == 200:
                try:
                    return resp.json(), None
                except ValueError:
                    return None, "unparseable reply (not JSON)"
            reason = f"HTTP {resp.status_code}: {resp.text.strip()[:120]}"
            if resp.status_code not in RETRY_STATUS:
                break
        return None, reason

    def _map(self, fn: Any, jobs: list[Any]) -> list[Reply]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(fn, jobs))

    def _generate_one(
        self, chat: Chat, max_tokens: int, top_logprobs: int, schema: dict[str, Any] | None
    ) -> Reply:
        body: dict[str, Any] = {"messages": chat, "max_tokens": max_tokens, "temperature": 0}
        if top_logprobs:
            body |= {"logprobs": True, "top_logprobs": top_logprobs}
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answers", "strict": True, "schema": schema},
            }
        data, error = self._post(body)
        if data is None:
            return Reply(error=error)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return Reply(error="unparseable reply (no choices[0].message.content)")
        if not isinstance(text, str) or not text.strip():
            return Reply(error="empty reply")
        return Reply(text.strip(), logprobs=_token_logprobs(choice) if top_logprobs else None)

    def generate(
        self,
        chats: list[Chat],
        max_tokens: int,
        top_logprobs: int = 0,
        schemas: list[dict[str, Any] | None] | None = None,
    ) -> list[Reply]:
        """One reply per prompt (temperature 0), with each token's ``top_logprobs`` candidates
        when asked and the server gives them; ``schemas[i]`` goes to the server as prompt i's
        ``response_format`` (a JSON schema the reply must follow)."""
        jobs = list(zip(chats, schemas or [None] * len(chats), strict=True))
        return self._map(lambda job: self._generate_one(job[0], max_tokens, top_logprobs, job[1]), jobs)  # fmt: skip

    def _yes_no_one(self, chat: Chat) -> Reply:
        body = {"messages": chat, "max_tokens": 1, "temperature": 0}
        data, error = self._post({**body, "logprobs": True, "top_logprobs": 10})
        if data is None:
            return Reply(error=error)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            return Reply(error="unparseable reply (no choices[0].message.content)")
        content = ((choice.get("logprobs") or {}).get("content")) or []
        if content and content[0].get("top_logprobs"):
            pairs = [(t["token"], t["logprob"]) for t in content[0]["top_logprobs"]]
            p = p_yes_from_logprobs(pairs)
            if p is not None:
                return Reply(text, p)
        return p_yes_from_text(text)

    def yes_no(self, chats: list[Chat]) -> list[Reply]:
        """P(yes) per prompt from the first token's log-probabilities (or its text)."""
        return self._map(self._yes_no_one, chats)
