"""Simulation from the in-process model's next-token distribution, against an independent forward:
the expected digit the local backend reads while generating equals the one computed from a plain
forward pass over the prompt and the reply up to that digit."""

from __future__ import annotations

import pytest
import torch

from mechscope.autointerp.judges import LLMJudge
from mechscope.autointerp.simulate import SCALE, parse_simulation

pytestmark = pytest.mark.slow


def test_local_expected_digits_match_a_plain_forward() -> None:
    from mechscope.autointerp.local import LocalBackend

    backend = LocalBackend("smollm2-135m")
    tokens = [" the", " river", " was", " cold", " in", " 1999"]
    chat = LLMJudge(backend).prompts.chat("simulation", explanation="numbers", text="the river was cold in 1999")  # fmt: skip
    reply = backend.generate([chat], 40, top_logprobs=5)[0]
    sim = parse_simulation(reply.text, tokens, reply.logprobs)
    assert sim.error is None and sim.from_logprobs > 0, (reply.text, sim)

    tok, model = backend.tokenizer, backend.model
    digit_ids = [tok.encode(str(d), add_special_tokens=False)[0] for d in SCALE]
    prompt = backend._text(chat)
    word, tab, digit = reply.text.split("\n")[0].partition("\t")  # the first line: "the\tD"
    assert word == "the" and tab and len(digit) == 1 and digit.isdigit(), reply.text
    ids = tok(prompt + "the\t", return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        p = torch.softmax(model(**ids).logits[0, -1].float(), -1)[digit_ids]
    expected = float((p * torch.tensor(SCALE, dtype=p.dtype)).sum() / p.sum())
    assert sim.values[0] == pytest.approx(expected, abs=1e-4)
    assert sim.values[0] != float(digit)  # the expectation, not the written digit


def test_local_generate_without_log_probabilities() -> None:
    """The explainer's call (no ``top_logprobs``): generation asks for no scores, and the reply
    is text without candidates (it failed with a TypeError when the scores were read anyway)."""
    from mechscope.autointerp.local import LocalBackend

    backend = LocalBackend("smollm2-135m")
    reply = backend.generate([[{"role": "user", "content": "Name a river."}]], 8)[0]
    assert reply.error is None and reply.text and reply.logprobs is None, reply
