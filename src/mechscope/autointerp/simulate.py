"""Per-token activations predicted by a language model, from its reply and its log-probabilities.

The simulation prompt asks the model to copy the text one token per line, each followed by a tab
and a digit from 0 (the feature is silent) to 9 (it fires most strongly). When the backend gives
the log-probabilities of the digit it wrote (``top_logprobs`` on a server; the next-token
distribution in-process), the prediction for that token is the expected digit

    E[a] = sum_d d * p(d) / sum_d p(d)    over the digit tokens d = 0..9 among the candidates,

as in Bills et al. 2023 ("Language models can explain neurons in language models") and delphi's
simulator, rather than the digit alone; when it gives none, the written digit. Each copied line is
matched, in order, to the next window token with the same text; window tokens the reply skips
predict 0; a written number beyond 9 counts as 9. A reply that matches no token of the window is unparseable (an error), not a
prediction of zero.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["SCALE", "Simulated", "TokenLogprobs", "expected_digit", "parse_simulation"]

SCALE = tuple(range(10))  # the digits the prompt asks for
_LINE = re.compile(r"^(?P<text>.*?)[\t:|=]+\s*(?P<digit>\d+)\s*$|^(?P<bare>.*\S)\s+(?P<d2>\d+)\s*$")
_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")  # a list marker: "- ", "* ", "2. ", "3) "

# one generated token: its text and the candidates (text, log-probability) at its position
TokenLogprobs = tuple[str, tuple[tuple[str, float], ...]]


@dataclass(frozen=True)
class Simulated:
    """Per-token predictions of one window, or the reason there are none.

    ``from_logprobs`` counts the window tokens whose prediction is an expected digit from
    log-probabilities; the others that the reply names took the written digit.
    """

    values: tuple[float, ...] | None
    error: str | None = None
    from_logprobs: int = 0
    from_text: int = 0


def expected_digit(candidates: Iterable[tuple[str, float]]) -> float | None:
    """sum_d d * p(d) / sum_d p(d) over the candidates (token text, log-probability) that are a
    digit of :data:`SCALE` (with or without surrounding spaces; one digit's forms add up);
    ``None`` when no candidate is a digit."""
    mass = dict.fromkeys(SCALE, 0.0)
    for token, logprob in candidates:
        word = token.strip()
        if len(word) == 1 and word.isdigit() and int(word) in mass:
            mass[int(word)] += math.exp(logprob)
    total = sum(mass.values())
    return sum(d * p for d, p in mass.items()) / total if total > 0 else None


def _digit_at(
    logprobs: Sequence[TokenLogprobs] | None, offsets: list[int], pos: int
) -> float | None:
    """The expected digit at character ``pos`` of the reply, when the generated token there is
    that digit alone and its candidates are known."""
    if not logprobs:
        return None
    for (token, candidates), start in zip(logprobs, offsets, strict=True):
        if start <= pos < start + len(token):
            return expected_digit(candidates) if token.strip().isdigit() else None
    return None


def parse_simulation(
    reply: str, tokens: Sequence[str], logprobs: Sequence[TokenLogprobs] | None = None
) -> Simulated:
    """Per-token predictions of ``tokens`` from a ``token<TAB>digit`` reply (``NONE``: all 0).

    ``logprobs`` are the generated tokens of ``reply`` with their candidates; when their texts
    do not add up to ``reply`` they are ignored and the written digits are used.
    """
    if logprobs is not None and "".join(t for t, _ in logprobs).strip() != reply.strip():
        logprobs = None
    full = "".join(t for t, _ in logprobs) if logprobs else reply
    offsets, at = [], 0
    for token, _ in logprobs or ():
        offsets.append(at)
        at += len(token)
    if not full.strip():
        return Simulated(None, "empty reply")
    if full.strip().upper().startswith("NONE"):
        return Simulated(tuple(0.0 for _ in tokens))
    values = [0.0] * len(tokens)
    keys = [t.strip() for t in tokens]
    nxt, n_logprobs, n_text, start = 0, 0, 0, 0
    for line in full.split("\n"):
        line_start, start = start, start + len(line) + 1
        body = _MARKER.sub("", line)  # removes a prefix only: positions shift by its length
        m = _LINE.match(body.rstrip())
        if not m:
            continue
        text = (m.group("text") if m.group("digit") else m.group("bare")).strip().strip("\"'`<> ")
        group = "digit" if m.group("digit") else "d2"
        if not text or text not in keys[nxt:]:
            continue
        j = keys.index(text, nxt)
        digit_pos = line_start + len(line) - len(body) + m.start(group)
        written = m.group(group)
        expected = _digit_at(logprobs, offsets, digit_pos) if len(written) == 1 else None
        if expected is None:  # a number beyond the scale counts as its top
            values[j], n_text = float(min(int(written), SCALE[-1])), n_text + 1
        else:
            values[j], n_logprobs = expected, n_logprobs + 1
        nxt = j + 1
    if n_logprobs + n_text == 0:
        return Simulated(None, f"unparseable reply (names no token of the text): {full[:60]!r}")
    return Simulated(tuple(values), from_logprobs=n_logprobs, from_text=n_text)
