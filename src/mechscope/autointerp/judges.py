"""Judges: what a scorer asks about an explanation and a window, answered by an LLM or by rule.

Three questions, each over many windows at once:
- ``detect``: does this text contain what the explanation describes? (P(yes) per window)
- ``fuzz``: do the tokens marked ``<<like this>>`` fit the explanation? (P(yes) per window)
- ``simulate``: where in this window does the feature fire? (a 0/1 prediction per token)

:class:`LLMJudge` asks a backend with the prompts of ``prompts.toml``. :class:`LexicalJudge` needs
no model: it reads the token classes and quoted tokens an explanation names
(:func:`mechscope.autointerp.classes.predicate`) and matches them, the no-LLM scorer that the
``tokens`` explainer's wording is made for. Each answer is a :class:`Reply`; a failed or
unparseable one carries ``error`` and never becomes a number.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mechscope.autointerp.backend import Backend, Reply
from mechscope.autointerp.classes import predicate
from mechscope.autointerp.prompts import Prompts, load_prompts
from mechscope.autointerp.records import mark

__all__ = ["Judge", "LLMJudge", "LexicalJudge", "Simulated", "parse_simulation"]

Window = Sequence[str]
_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")  # a list marker: "- ", "* ", "2. ", "3) "


@dataclass(frozen=True)
class Simulated:
    """Per-token predictions of one window, or the reason there are none."""

    values: tuple[float, ...] | None
    error: str | None = None


class Judge:
    name = "judge"

    def detect(self, explanation: str, windows: list[Window]) -> list[Reply]:
        raise NotImplementedError

    def fuzz(self, explanation: str, windows: list[tuple[Window, list[bool]]]) -> list[Reply]:
        raise NotImplementedError

    def simulate(self, explanation: str, windows: list[Window]) -> list[Simulated]:
        raise NotImplementedError


class LexicalJudge(Judge):
    """Answers by matching the classes and quoted tokens an explanation names."""

    name = "lexical"

    def detect(self, explanation: str, windows: list[Window]) -> list[Reply]:
        match = predicate(explanation)
        out = []
        for tokens in windows:
            hits = sum(map(match, tokens))
            out.append(Reply("Yes" if hits else "No", 1 - 0.25**hits))  # one hit: 0.75
        return out

    def fuzz(self, explanation: str, windows: list[tuple[Window, list[bool]]]) -> list[Reply]:
        match = predicate(explanation)
        out = []
        for tokens, marks in windows:
            marked = [t for t, m in zip(tokens, marks, strict=True) if m]
            share = sum(map(match, marked)) / len(marked) if marked else 0.0
            out.append(Reply("Yes" if share > 0.5 else "No", share))
        return out

    def simulate(self, explanation: str, windows: list[Window]) -> list[Simulated]:
        match = predicate(explanation)
        return [Simulated(tuple(float(match(t)) for t in tokens)) for tokens in windows]


def parse_simulation(reply: str, tokens: Window) -> Simulated:
    """Per-token predictions from a reply that lists the firing tokens one per line.

    ``NONE`` predicts zero everywhere. Lines are stripped of list markers, quotes and the
    ``<< >>`` marks; a token fires when its text equals a listed line. A reply whose lines name
    no token of the window is unparseable (an error), not a prediction of zero.
    """
    lines = [_MARKER.sub("", line).strip().strip("\"'`<> ") for line in reply.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return Simulated(None, "empty reply")
    if lines[0].upper().startswith("NONE"):
        return Simulated(tuple(0.0 for _ in tokens))
    listed = set(lines)
    values = tuple(float(bool(t.strip()) and t.strip() in listed) for t in tokens)
    if not any(values):
        return Simulated(None, f"unparseable reply (names no token of the text): {reply[:60]!r}")
    return Simulated(values)


class LLMJudge(Judge):
    """Asks ``backend`` with the detection, fuzzing and simulation prompts."""

    def __init__(
        self, backend: Backend, prompts: Prompts | None = None, max_tokens: int = 48
    ) -> None:
        self.backend = backend
        self.prompts = prompts or load_prompts()
        self.max_tokens = max_tokens
        self.name = backend.name

    def detect(self, explanation: str, windows: list[Window]) -> list[Reply]:
        chats = [
            self.prompts.chat("detection", explanation=explanation, text="".join(w).strip())
            for w in windows
        ]
        return self.backend.yes_no(chats)

    def fuzz(self, explanation: str, windows: list[tuple[Window, list[bool]]]) -> list[Reply]:
        chats = [
            self.prompts.chat("fuzzing", explanation=explanation, text=mark(w, m).strip())
            for w, m in windows
        ]
        return self.backend.yes_no(chats)

    def simulate(self, explanation: str, windows: list[Window]) -> list[Simulated]:
        chats = [
            self.prompts.chat("simulation", explanation=explanation, text="".join(w).strip())
            for w in windows
        ]
        replies = self.backend.generate(chats, self.max_tokens)
        return [
            Simulated(None, r.error) if r.error else parse_simulation(r.text or "", w)
            for r, w in zip(replies, windows, strict=True)
        ]
