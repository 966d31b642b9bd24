"""What the explainer and the judges ask of a language model, and how to pick one.

A backend answers two kinds of call, many prompts at a time: :meth:`generate` (a short reply,
with each generated token's ``top_logprobs`` candidates when asked and available, held to a JSON
schema per prompt where the backend can: ``schemas``) and
:meth:`yes_no` (the probability that the answer is "Yes", from the next-token log-probabilities
when the backend gives them, else from the reply's first word). Each prompt gets a
:class:`Reply`; a failed call, a timeout or an unparseable reply is a ``Reply`` with ``error`` set,
never a made-up value.

Specs: ``local`` / ``local:MODEL`` (:mod:`.local`, a Hugging Face model in-process; default the
built-in SmolLM2-135M-Instruct), ``openai:URL`` (:mod:`.openai`, any OpenAI-compatible chat
endpoint).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from mechscope.errors import MechscopeError

__all__ = ["Backend", "Reply", "make_backend", "p_yes_from_logprobs", "p_yes_from_text"]

Chat = list[dict[str, str]]
YES = ("yes",)
NO = ("no",)


@dataclass(frozen=True)
class Reply:
    """One answer: the text, P(yes) for a yes/no call, or the reason it failed.

    ``logprobs``: per generated token, its text and its candidates (text, log-probability), when
    :meth:`Backend.generate` was asked for them and the backend gives them.
    """

    text: str | None = None
    p_yes: float | None = None
    error: str | None = None
    logprobs: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] | None = None


class Backend(Protocol):
    name: str

    def generate(
        self,
        chats: list[Chat],
        max_tokens: int,
        top_logprobs: int = 0,
        schemas: list[dict[str, Any] | None] | None = None,
    ) -> list[Reply]: ...

    def yes_no(self, chats: list[Chat]) -> list[Reply]: ...


def p_yes_from_logprobs(pairs: Iterable[tuple[str, float]]) -> float | None:
    """P(yes) / (P(yes) + P(no)) over candidate tokens (text, log-probability); ``None`` when
    neither answer is among them. Quotes and brackets around the word are ignored (a JSON answer's
    token may be ``"Yes``)."""
    yes = no = 0.0
    for token, logprob in pairs:
        word = token.strip().strip("\"'[]{},").strip().lower()
        if word in YES:
            yes += math.exp(logprob)
        elif word in NO:
            no += math.exp(logprob)
    return yes / (yes + no) if yes + no > 0 else None


def p_yes_from_text(text: str) -> Reply:
    """1.0 for a reply that starts with yes, 0.0 for no, else an unparseable-reply error."""
    word = text.strip().lstrip("*\"'").lower()
    if word.startswith("yes"):
        return Reply(text, 1.0)
    if word.startswith("no"):
        return Reply(text, 0.0)
    return Reply(text, None, f"unparseable reply (expected Yes or No): {text.strip()[:60]!r}")


def make_backend(spec: str, **options: Any) -> Backend:
    """A backend from its spec: ``local``, ``local:MODEL`` or ``openai:URL``."""
    kind, _, rest = spec.partition(":")
    if kind == "local":
        from mechscope.autointerp.local import LocalBackend

        return LocalBackend(
            rest or "smollm2-135m",
            batch_size=options.get("batch_size", 8),
            device=options.get("device") or "cpu",
        )
    if kind == "openai" and rest:
        from mechscope.autointerp.openai import OpenAIBackend

        keys = ("model", "api_key_env", "concurrency", "timeout", "retries")
        return OpenAIBackend(rest, **{k: options[k] for k in keys if options.get(k) is not None})
    raise MechscopeError(
        f"unknown LLM backend {spec!r}: use local, local:MODEL (a hub id or folder) "
        "or openai:URL (an OpenAI-compatible server)"
    )
