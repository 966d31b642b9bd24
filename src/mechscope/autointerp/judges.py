"""Judges: what a scorer asks about an explanation and a window, answered by an LLM or by rule.

Three questions, each over many windows at once:
- ``detect``: does this text contain what the explanation describes? (P(yes) per window)
- ``fuzz``: do the tokens marked ``<<like this>>`` fit the explanation? (P(yes) per window)
- ``simulate``: how strongly does the feature fire on each token of this window? (0-9 per token,
  the expected digit from log-probabilities when the backend gives them: :mod:`.simulate`)

Detection and fuzzing ask one window per call, or several numbered windows per call
(``per_call``; :mod:`.numbered`).

:class:`LLMJudge` asks a backend with the prompts of ``prompts.toml``. :class:`LexicalJudge` needs
no model: it reads the token classes and quoted tokens an explanation names
(:func:`mechscope.autointerp.classes.predicate`) and matches them, the no-LLM scorer that the
``tokens`` explainer's wording is made for. Each answer is a :class:`Reply`; a failed or
unparseable one carries ``error`` and never becomes a number.
"""

from __future__ import annotations

from collections.abc import Sequence

from mechscope.autointerp.backend import Backend, Reply
from mechscope.autointerp.classes import predicate
from mechscope.autointerp.numbered import answer_schema, chunks, numbered, parse_answers
from mechscope.autointerp.prompts import Prompts, load_prompts
from mechscope.autointerp.records import mark
from mechscope.autointerp.simulate import Simulated, parse_simulation
from mechscope.errors import MechscopeError

__all__ = ["Judge", "LLMJudge", "LexicalJudge", "Simulated", "parse_simulation"]

Window = Sequence[str]
TOP_LOGPROBS = 20  # candidates asked per generated token (OpenAI's maximum)
YES_NO_LOGPROBS = 5  # enough to hold Yes and No at an answer's token


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


class LLMJudge(Judge):
    """Asks ``backend`` with the detection, fuzzing and simulation prompts.

    ``per_call``: windows per detection or fuzzing call. 1 asks one yes/no question per window
    (prompt sections ``detection``, ``fuzzing``; P(yes) from the first token); more lists that many
    numbered windows in one call (``detection_batch``, ``fuzzing_batch``; :mod:`.numbered`). The
    judge's name carries ``per_call`` when it is not 1, so scores asked the two ways are kept apart.
    """

    def __init__(
        self,
        backend: Backend,
        prompts: Prompts | None = None,
        max_tokens: int = 48,
        per_call: int = 1,
    ) -> None:
        if per_call < 1:
            raise MechscopeError(f"windows per judge call must be 1 or more, not {per_call}")
        self.backend = backend
        self.prompts = prompts or load_prompts()
        self.max_tokens = max_tokens
        self.per_call = per_call
        self.name = backend.name if per_call == 1 else f"{backend.name} ({per_call} per call)"

    def detect(self, explanation: str, windows: list[Window]) -> list[Reply]:
        texts = ["".join(w).strip() for w in windows]
        if self.per_call > 1:
            return self._numbered("detection_batch", explanation, texts)
        chats = [self.prompts.chat("detection", explanation=explanation, text=t) for t in texts]
        return self.backend.yes_no(chats)

    def fuzz(self, explanation: str, windows: list[tuple[Window, list[bool]]]) -> list[Reply]:
        texts = [mark(w, m).strip() for w, m in windows]
        if self.per_call > 1:
            return self._numbered("fuzzing_batch", explanation, texts)
        chats = [self.prompts.chat("fuzzing", explanation=explanation, text=t) for t in texts]
        return self.backend.yes_no(chats)

    def _numbered(self, section: str, explanation: str, texts: list[str]) -> list[Reply]:
        """One call per run of up to ``per_call`` texts; the answers back in the texts' order."""
        groups = chunks(len(texts), self.per_call)
        chats = [
            self.prompts.chat(section, explanation=explanation,
                              texts=numbered([texts[i] for i in g]), n=str(len(g)))
            for g in groups
        ]  # fmt: skip
        longest = max((len(g) for g in groups), default=0)
        # {"answers": ["Yes", "No"]}: about 3 tokens per answer and 6 around them, with room
        replies = self.backend.generate(
            chats, 4 * longest + 12, top_logprobs=YES_NO_LOGPROBS,
            schemas=[answer_schema(len(g)) for g in groups],
        )  # fmt: skip
        out: list[Reply] = []
        for g, reply in zip(groups, replies, strict=True):
            out += [reply] * len(g) if reply.error else parse_answers(reply.text or "", len(g), reply.logprobs)  # fmt: skip
        return out

    def simulate(self, explanation: str, windows: list[Window]) -> list[Simulated]:
        chats = [
            self.prompts.chat("simulation", explanation=explanation, text="".join(w).strip())
            for w in windows
        ]
        # the reply copies every token with a tab and a digit: about 4 tokens per window token
        longest = max((len(w) for w in windows), default=0)
        replies = self.backend.generate(chats, 4 * longest + 8, top_logprobs=TOP_LOGPROBS)
        return [
            Simulated(None, r.error) if r.error else parse_simulation(r.text or "", w, r.logprobs)
            for r, w in zip(replies, windows, strict=True)
        ]
