"""Simulation from log-probabilities: the expected digit on hand-made candidate lists (exact), its
placement on the window's tokens, and the fallback to the written digit when there are none."""

from __future__ import annotations

import math

import pytest

from mechscope.autointerp.simulate import expected_digit, parse_simulation

LN = math.log


def test_expected_digit_is_the_mean_of_the_digit_distribution() -> None:
    # p(0)=0.5, p(3)=0.2 (" 3" and "3" add up), p(9)=0.1; "x" and "10" are not digits of 0..9
    candidates = [("0", LN(0.5)), ("3", LN(0.15)), (" 3", LN(0.05)), ("9", LN(0.1)),
                  ("x", LN(0.15)), ("10", LN(0.05))]  # fmt: skip
    assert expected_digit(candidates) == pytest.approx((3 * 0.2 + 9 * 0.1) / 0.8, rel=1e-12)
    assert expected_digit([("7", 0.0)]) == pytest.approx(7.0)
    assert expected_digit([("x", -0.1), ("yes", -2.0)]) is None


def _stream(*pieces: tuple[str, dict[str, float]]) -> tuple:
    return tuple((text, tuple((t, LN(p)) for t, p in cands.items())) for text, cands in pieces)


def test_simulation_reads_the_digit_positions_of_the_reply() -> None:
    tokens = [" we", " paid", " 12", " dollars"]
    stream = _stream(
        ("we", {}), ("\t", {}), ("0", {"0": 0.9, "8": 0.1}), ("\n", {}),
        ("1", {}), ("2", {}), ("\t", {}), ("9", {"9": 0.5, "6": 0.25, "\t": 0.25}), ("\n", {}),
        ("dollars", {}), ("\t", {}), ("1", {"1": 0.6, "2": 0.2, "the": 0.2}),
    )  # fmt: skip
    reply = "".join(t for t, _ in stream)
    sim = parse_simulation(reply, tokens, stream)
    assert sim.values == pytest.approx((0.8, 0.0, (9 * 0.5 + 6 * 0.25) / 0.75, (0.6 + 0.4) / 0.8))
    assert (sim.from_logprobs, sim.from_text) == (3, 0)
    # no candidates at all, or a stream that is not this reply: the written digits
    assert parse_simulation(reply, tokens).values == (0.0, 0.0, 9.0, 1.0)
    other = parse_simulation(reply, tokens, _stream(("we", {"we": 1.0})))
    assert other.values == (0.0, 0.0, 9.0, 1.0) and other.from_text == 3
