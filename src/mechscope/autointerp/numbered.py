"""Several windows in one judge call: numbered texts in, one Yes or No per text out.

A call lists up to ``per_call`` windows as numbered lines (``1: ...``; a line break inside a window
is shown as ``\\n``) and asks for ``{"answers": ["Yes", "No", ...]}``: one answer per text, in
order. The windows are cut into calls of nearly equal size (8 windows, 5 per call: 4 + 4), so no
call is left with a stray window. Each call carries a JSON schema of exactly that shape (OpenAI's
``response_format``, which llama.cpp's server, vLLM, Ollama and OpenAI follow), so a server that
honours it cannot let a small model stop after two answers; one that ignores it is still parsed.

The parse is strict: a reply that is not that object, or answers more or fewer texts than it was
given, or gives anything but Yes or No, is an error for every window of the call, with its reason;
it never becomes a score. P(yes) of each text is read from the log-probabilities at its answer's
token, P(yes) / (P(yes) + P(no)) among the token's candidates (the next-token distribution the
model had there, as for the one-window yes/no call), where the backend gives them; else 1 or 0 from
the word. Shared text first: the system message, the worked example and the explanation open every
call of a feature, so a server that caches prompt prefixes (llama.cpp's ``cache_prompt``, on by
default) processes only the windows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from mechscope.autointerp.backend import Reply, p_yes_from_logprobs

__all__ = ["answer_schema", "chunks", "numbered", "parse_answers"]

Logprobs = tuple[tuple[str, tuple[tuple[str, float], ...]], ...]
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def chunks(n: int, per_call: int) -> list[range]:
    """``range(n)`` cut into ``ceil(n / per_call)`` consecutive runs of nearly equal size."""
    if per_call < 1:
        raise ValueError(f"per_call must be at least 1, not {per_call}")
    calls = -(-n // per_call)
    bounds = [round(i * n / calls) for i in range(calls + 1)] if calls else [0]
    return [range(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def numbered(texts: Sequence[str]) -> str:
    """One line per text, ``1: ...``, line breaks inside a text shown as ``\\n``."""
    return "\n".join(f"{i + 1}: {t.strip()}".replace("\n", "\\n") for i, t in enumerate(texts))


def answer_schema(k: int) -> dict[str, Any]:
    """The JSON schema of a reply answering ``k`` texts: ``{"answers": [k times Yes or No]}``."""
    items = {"type": "string", "enum": ["Yes", "No"]}
    answers = {"type": "array", "items": items, "minItems": k, "maxItems": k}
    return {"type": "object", "properties": {"answers": answers}, "required": ["answers"],
            "additionalProperties": False}  # fmt: skip


def parse_answers(text: str, k: int, logprobs: Logprobs | None = None) -> list[Reply]:
    """One :class:`Reply` per text (``p_yes`` set), or ``k`` copies of the reply's error."""
    source = text
    if logprobs:  # parse the generated tokens themselves, to know which token holds each answer
        joined = "".join(token for token, _ in logprobs)
        if joined.strip() == text.strip():
            source = joined
        else:
            logprobs = None
    answers, error = _read(source, k)
    if error is not None:
        return [Reply(text, None, f"unparseable reply ({error}): {text.strip()[:80]!r}")] * k
    out = []
    for word, offset in answers:
        p = None
        if logprobs:
            p = p_yes_from_logprobs(logprobs[_token_at(logprobs, offset)][1])
        if p is None:
            p = 1.0 if word == "yes" else 0.0
        out.append(Reply(word.capitalize(), p))
    return out


def _read(source: str, k: int) -> tuple[list[tuple[str, int]], str | None]:
    """``[(yes|no, offset of the answer in source)]`` or the reason the reply is not a valid one."""
    start = source.find("{")
    if start < 0:
        return [], 'no JSON object {"answers": [...]}'
    try:
        obj, end = json.JSONDecoder().raw_decode(source, start)
    except json.JSONDecodeError as exc:
        return [], f"bad JSON: {exc.msg}"
    if not isinstance(obj, dict) or set(obj) != {"answers"} or not isinstance(obj["answers"], list):
        return [], 'expected exactly {"answers": [...]}'
    if len(obj["answers"]) != k:
        return [], f"{len(obj['answers'])} answers for {k} texts"
    strings = [m for m in _STRING.finditer(source, start, end)]
    items = strings[1:]  # the first string is the key "answers"
    if len(items) != k:  # a non-string answer (true, 1, null)
        return [], "an answer that is not Yes or No"
    out = []
    for value, m in zip(obj["answers"], items, strict=True):
        word = value.strip().lower() if isinstance(value, str) else ""
        if word not in ("yes", "no"):
            return [], f"answer {value!r} is not Yes or No"
        out.append((word, m.start(1)))
    return out, None


def _token_at(logprobs: Logprobs, offset: int) -> int:
    """The index of the generated token that covers character ``offset`` of the joined text."""
    end = 0
    for i, (token, _) in enumerate(logprobs):
        end += len(token)
        if offset < end:
            return i
    return len(logprobs) - 1
