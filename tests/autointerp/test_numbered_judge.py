"""Several windows per judge call: the strict parse of the reply, the answers mapped back to their
windows (a planted judge answering by a known rule gives the rule's known accuracy), and one
window per call giving the same score as the one-question-per-window path."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from mechscope.autointerp.backend import Reply
from mechscope.autointerp.judges import LLMJudge
from mechscope.autointerp.metrics import auroc, balanced_accuracy
from mechscope.autointerp.numbered import chunks, numbered, parse_answers
from mechscope.autointerp.planted import planted_examples, planted_windows
from mechscope.autointerp.prompts import load_prompts
from mechscope.autointerp.records import split
from mechscope.autointerp.scorers import SCORERS, ScoreContext
from mechscope.errors import MechscopeError


def _tokens(text: str, p_yes: list[float], glue: str = "") -> tuple:
    """A reply's generated tokens as a server gives them: each answer word one token (with
    ``glue`` in front, e.g. a quote merged into it) whose candidates hold Yes and No."""
    parts = re.split(r"(Yes|No)", text)
    tokens: list[tuple[str, tuple]] = []
    k = 0
    for part in parts:
        if part in ("Yes", "No"):
            p = p_yes[k]
            k += 1
            cands = ((glue + "Yes", math.log(p)), (glue + "No", math.log(1 - p) - 0.1))
            if glue and tokens and tokens[-1][0].endswith(glue):
                tokens[-1] = (tokens[-1][0][: -len(glue)], ())
            tokens.append((glue + part, cands))
        elif part:
            tokens.append((part, ()))
    return tuple(tokens)


def test_parser_reads_every_answer_and_its_log_probabilities() -> None:
    text = '{"answers": ["Yes", "No", "yes"]}'
    assert [r.p_yes for r in parse_answers(text, 3)] == [1.0, 0.0, 1.0]
    assert parse_answers("Sure: " + text + "\n", 3)[2].text == "Yes"  # prose around is read past
    p = [0.7, 0.2, 0.9]
    want = [x / (x + (1 - x) * math.exp(-0.1)) for x in p]
    for glue in ("", '"'):  # the answer token alone, or with its opening quote merged in
        tokens = _tokens(text.replace("yes", "Yes"), p, glue)
        assert "".join(t for t, _ in tokens) == text.replace("yes", "Yes")
        got = [r.p_yes for r in parse_answers(text.replace("yes", "Yes"), 3, tokens)]
        assert got == pytest.approx(want)
    # tokens that do not spell the reply are not trusted: the words decide
    tokens = _tokens('{"answers": ["No", "No", "Yes"]}', p)
    assert [r.p_yes for r in parse_answers(text, 3, tokens)] == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ('{"answers": ["Yes", "No"]}', "2 answers for 3 texts"),
        ('{"answers": ["Yes", "No", "No", "Yes"]}', "4 answers for 3 texts"),
        ('{"answers": ["Yes", "Maybe", "No"]}', "'Maybe' is not Yes or No"),
        ('{"answers": ["Yes", true, "No"]}', "not Yes or No"),
        ('{"answers": ["Yes", "No", "No"], "why": "x"}', 'exactly {"answers"'),
        ('{"answers": "Yes No No"}', 'exactly {"answers"'),
        ("1: Yes\n2: No\n3: No", "no JSON object"),
        ('{"answers": ["Yes", "No", ', "bad JSON"),
        ("", "no JSON object"),
    ],
)
def test_parser_turns_a_short_or_bad_reply_into_an_error_for_every_window(reply, reason) -> None:
    replies = parse_answers(reply, 3)
    assert len(replies) == 3
    assert all(r.p_yes is None and r.error.startswith("unparseable reply") for r in replies)
    assert reason in replies[0].error


def test_chunks_cover_every_window_once_in_nearly_equal_calls() -> None:
    for n in range(0, 23):
        for k in (1, 2, 5, 7):
            groups = chunks(n, k)
            assert [i for g in groups for i in g] == list(range(n))
            sizes = [len(g) for g in groups]
            assert len(groups) == math.ceil(n / k) and (not sizes or max(sizes) - min(sizes) <= 1)
            assert all(0 < s <= k for s in sizes)
    assert [len(g) for g in chunks(8, 5)] == [4, 4]
    assert numbered(["a b", " x\ny "]) == "1: a b\n2: x\\ny"


def _rule(text: str) -> float:
    """The planted judge's P(yes) for a window: high when it holds a digit, lower as it grows."""
    digits = sum(c.isdigit() for c in text)
    return min(0.95, max(0.05, (0.8 if digits else 0.3) - 0.002 * len(text) + 0.03 * digits))


class RuleJudgeBackend:
    """Answers every numbered text of a call by :func:`_rule`, with log-probabilities; one
    yes/no call per text the same way. ``drop`` answers one text fewer than asked."""

    name = "rule"

    def __init__(self, drop: bool = False) -> None:
        self.drop = drop
        self.calls = 0
        self.schemas: list = []

    def generate(self, chats, max_tokens, top_logprobs=0, schemas=None) -> list[Reply]:
        out = []
        for chat, schema in zip(chats, schemas, strict=True):
            self.calls += 1
            lines = re.findall(r"^(\d+): (.*)$", chat[-1]["content"], flags=re.M)
            assert [int(n) for n, _ in lines] == list(range(1, len(lines) + 1))
            self.schemas.append(schema["properties"]["answers"]["minItems"] == len(lines))
            p = [_rule(t.replace("\\n", "\n")) for _, t in lines][: len(lines) - self.drop]
            text = json.dumps({"answers": ["Yes" if x > 0.5 else "No" for x in p]})
            out.append(Reply(text, logprobs=_tokens(text, p) if top_logprobs else None))
        return out

    def yes_no(self, chats) -> list[Reply]:
        self.calls += len(chats)
        texts = [c[-1]["content"].split("Text: ", 1)[1].rsplit("\n\n", 1)[0] for c in chats]
        return [Reply("Yes" if _rule(t) > 0.5 else "No", _rule(t)) for t in texts]


def _windows():
    feats = planted_examples(planted_windows(seed=0), seed=0)
    data = split(feats[1], n_score=10)  # capitalised words: the digit rule is a poor guess
    windows = [e.tokens for e in data.activating + data.negative]
    labels = [True] * len(data.activating) + [False] * len(data.negative)
    return data, windows, labels


@pytest.mark.parametrize("per_call", [2, 3, 5, 7])
def test_answers_map_back_to_their_windows(per_call: int) -> None:
    data, windows, labels = _windows()
    p = [_rule("".join(w).strip()) for w in windows]  # the rule applied window by window
    backend = RuleJudgeBackend()
    judge = LLMJudge(backend, per_call=per_call)
    score = SCORERS["detection"]("capitalised words", data, ScoreContext(judge, seed=4))
    assert score.error is None
    assert score.value == pytest.approx(auroc(p, labels))
    assert score.details["balanced_accuracy"] == balanced_accuracy([x > 0.5 for x in p], labels)
    assert 0.55 < score.value < 0.95  # neither chance nor perfect: a mix-up would show
    assert backend.calls == math.ceil(len(windows) / per_call) and all(backend.schemas)
    assert score.details["per_call"] == per_call and judge.name == f"rule ({per_call} per call)"


def test_fuzzing_answers_map_back_to_their_markings() -> None:
    data, _, _ = _windows()
    one = SCORERS["fuzzing"]("x", data, ScoreContext(LLMJudge(RuleJudgeBackend()), seed=1))
    five = SCORERS["fuzzing"]("x", data, ScoreContext(LLMJudge(RuleJudgeBackend(), per_call=5), seed=1))  # fmt: skip
    assert one.error is None and five.error is None and one.details["n"] == five.details["n"]
    assert five.value == pytest.approx(one.value)
    assert five.details["balanced_accuracy"] == one.details["balanced_accuracy"]


def test_one_window_per_call_equals_the_one_question_path() -> None:
    data, windows, labels = _windows()
    backend = RuleJudgeBackend()
    prompts = load_prompts()
    old = backend.yes_no(
        [prompts.chat("detection", explanation="e", text="".join(w).strip()) for w in windows]
    )
    want = auroc([r.p_yes for r in old], labels)
    for seed in (0, 1, 2):  # the asking order changes with the seed; the score does not
        score = SCORERS["detection"]("e", data, ScoreContext(LLMJudge(backend), seed=seed))
        assert score.value == want and score.details["per_call"] == 1
    assert LLMJudge(backend).name == "rule"  # stored scores of the old path stay valid


def test_a_short_reply_is_an_error_never_a_score() -> None:
    data, windows, _ = _windows()
    judge = LLMJudge(RuleJudgeBackend(drop=True), per_call=5)
    score = SCORERS["detection"]("capitalised words", data, ScoreContext(judge))
    assert score.value is None
    assert score.error.startswith(f"{len(windows)} of {len(windows)} answers failed")
    assert "answers for" in score.error
    with pytest.raises(MechscopeError, match="1 or more"):
        LLMJudge(RuleJudgeBackend(), per_call=0)


def test_shuffled_order_mixes_the_two_kinds_in_calls() -> None:
    data, windows, labels = _windows()
    seen = []

    class Spy(RuleJudgeBackend):
        def generate(self, chats, max_tokens, top_logprobs=0, schemas=None):
            for chat in chats:
                seen.append(re.findall(r"^\d+: (.*)$", chat[-1]["content"], flags=re.M))
            return super().generate(chats, max_tokens, top_logprobs, schemas)

    SCORERS["detection"]("e", data, ScoreContext(LLMJudge(Spy(), per_call=5), seed=0))
    kind = {"".join(w).strip(): y for w, y in zip(windows, labels, strict=True)}
    mixed = [len({kind[t] for t in call}) == 2 for call in seen]
    assert sum(mixed) >= len(seen) // 2 and np.mean([len(c) for c in seen]) == 5
