"""The editable prompt file, the explainer's and the simulation's reply parsing, and the LLM
judge and explainer wired to a scripted backend (what reaches the model, what comes back)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mechscope.autointerp.backend import Reply, p_yes_from_logprobs
from mechscope.autointerp.explainers import LLMExplainer, parse_explanation
from mechscope.autointerp.judges import LLMJudge, parse_simulation
from mechscope.autointerp.prompts import DEFAULT_PROMPTS, load_prompts
from mechscope.autointerp.records import Example
from mechscope.errors import MechscopeError


class Scripted:
    """A backend that records the chats it gets and answers from a script."""

    name = "scripted"

    def __init__(self, text: str) -> None:
        self.text = text
        self.chats: list = []

    def generate(self, chats: list, max_tokens: int) -> list[Reply]:
        self.chats += chats
        return [Reply(self.text) for _ in chats]

    def yes_no(self, chats: list) -> list[Reply]:
        self.chats += chats
        return [Reply("Yes", 0.9) for _ in chats]


def test_explanation_and_simulation_parsing() -> None:
    assert parse_explanation('Sure!\nExplanation: the word "river"').text == 'the word "river"'
    assert parse_explanation('"numbers"').text == "numbers"
    assert parse_explanation("  \n ").error == "empty explanation in the reply"
    tokens = [" we", " paid", " 12", " dollars", " for", " 3", " books"]
    sim = parse_simulation("we\t0\npaid\t0\n- 12\t9\ndollars: 1\n3\t17\nbooks\t0", tokens)
    assert sim.values == (0, 0, 9, 1, 0, 9, 0) and (sim.from_text, sim.from_logprobs) == (6, 0)
    assert parse_simulation("NONE", tokens).values == (0,) * 7
    bad = parse_simulation("banana\nkiwi", tokens)
    assert bad.values is None and bad.error.startswith("unparseable reply (names no token")
    assert p_yes_from_logprobs([("Yes", -0.1), ("No", -5.0)]) == pytest.approx(0.9933, abs=1e-3)
    assert p_yes_from_logprobs([("Maybe", -0.1)]) is None


def test_edited_prompt_file_is_what_the_model_sees(tmp_path: Path) -> None:
    edited = DEFAULT_PROMPTS.read_text().replace(
        'What do the marked tokens have in common?"""', 'Name the pattern, $$5 prize."""', 1
    )
    path = tmp_path / "prompts.toml"
    path.write_text(edited)
    prompts = load_prompts(path)
    backend = Scripted("Explanation: numbers")
    example = Example((" we", " paid", " 12"), (0.0, 0.0, 1.5))
    reply = LLMExplainer(backend, prompts).explain([[example]])[0]
    assert reply.text == "numbers"
    chat = backend.chats[0]
    assert chat[-1]["content"] == "Example 1: we paid <<12>>\n\nName the pattern, $5 prize."
    assert [m["role"] for m in chat] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    judge = LLMJudge(Scripted(""), prompts)
    assert judge.detect("numbers", [example.tokens])[0].p_yes == 0.9
    assert "Text: we paid 12\n" in judge.backend.chats[-1][-1]["content"]
    judge.fuzz("numbers", [(example.tokens, [False, True, False])])
    assert "Text: we <<paid>> 12\n" in judge.backend.chats[-1][-1]["content"]

    path.write_text(edited.replace("$examples", "$exemples"))
    with pytest.raises(MechscopeError, match=r"prompt \[explain\] .* unknown or bad field"):
        LLMExplainer(backend, load_prompts(path)).explain([[example]])
    path.write_text("[explain]\nsystem = 'x'\n")
    with pytest.raises(
        MechscopeError, match="lacks \\[explain\\] with string keys system and user"
    ):
        load_prompts(path)
