"""The explainers: ``tokens`` (no LLM) and an LLM explainer over any backend.

An explainer turns each feature's explanation examples into a :class:`Reply` whose ``text`` is a
short explanation. The LLM explainer shows the examples with the activating tokens marked
``<<like this>>`` (prompt section ``[explain]`` of ``prompts.toml``) and keeps the phrase after
"Explanation:" (else the reply's first line); an empty reply is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mechscope.autointerp.backend import Backend, Reply, make_backend
from mechscope.autointerp.explain_tokens import explain_tokens
from mechscope.autointerp.prompts import Prompts, load_prompts
from mechscope.autointerp.records import Example, mark_active

__all__ = ["Explainer", "LLMExplainer", "TokensExplainer", "make_explainer", "parse_explanation"]


class Explainer:
    name = "explainer"

    def explain(self, features: list[Sequence[Example]]) -> list[Reply]:
        raise NotImplementedError


class TokensExplainer(Explainer):
    name = "tokens"

    def explain(self, features: list[Sequence[Example]]) -> list[Reply]:
        return [Reply(explain_tokens(examples)) for examples in features]


def parse_explanation(reply: str) -> Reply:
    """The explanation phrase of an LLM reply, or an error when there is none."""
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    picked = next((line for line in lines if line.lower().startswith("explanation:")), None)
    if picked is not None:
        picked = picked.split(":", 1)[1]
    elif lines:
        picked = lines[0]
    text = (picked or "").strip().strip("*` ").strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":  # the whole phrase quoted
        text = text[1:-1].strip()
    text = text[:300]
    return Reply(text) if text else Reply(reply, error="empty explanation in the reply")


class LLMExplainer(Explainer):
    """Asks ``backend`` with the ``[explain]`` prompt."""

    def __init__(self, backend: Backend, prompts: Prompts | None = None, max_tokens: int = 40):
        self.backend = backend
        self.prompts = prompts or load_prompts()
        self.max_tokens = max_tokens
        self.name = backend.name

    def prompt(self, examples: Sequence[Example]) -> list[dict[str, str]]:
        shown = "\n".join(
            f"Example {i + 1}: {mark_active(e).strip()}" for i, e in enumerate(examples)
        )
        return self.prompts.chat("explain", examples=shown)

    def explain(self, features: list[Sequence[Example]]) -> list[Reply]:
        replies = self.backend.generate([self.prompt(f) for f in features], self.max_tokens)
        return [r if r.error else parse_explanation(r.text or "") for r in replies]


def make_explainer(spec: str, prompts: Prompts | None = None, **options: Any) -> Explainer:
    """``tokens``, ``local[:MODEL]`` or ``openai:URL`` (options go to the backend)."""
    if spec == "tokens":
        return TokensExplainer()
    return LLMExplainer(make_backend(spec, **options), prompts)
