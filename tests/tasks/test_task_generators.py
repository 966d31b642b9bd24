"""Built-in generators: n aligned pairs, one-token answers, seeded, and task-specific structure."""

from __future__ import annotations

import pytest
import torch

from mechscope import HookedModel, MechscopeError
from mechscope.models.tiny import VOCAB, tiny_model
from mechscope.tasks import TASKS, evaluate
from mechscope.tasks.greater_than import digit_mode, make_greater_than
from mechscope.tasks.induction import make_induction
from mechscope.tasks.ioi import make_ioi


@pytest.mark.parametrize("name", sorted(TASKS))
def test_generator_contract(name: str, smol_tokenizer) -> None:
    task = TASKS[name](smol_tokenizer, 12, seed=3)
    assert task.name == name and len(task) == 12
    batch = task.tokenize(smol_tokenizer, require_uniform=True)  # equal lengths, one-token answers
    assert batch.uniform and batch.answer_ids.shape == (12,)
    assert (batch.answer_ids != batch.wrong_ids).all()
    assert (batch.clean_tokens != batch.corrupt_tokens).any(dim=1).all()
    assert TASKS[name](smol_tokenizer, 12, seed=3) == task
    other = TASKS[name](smol_tokenizer, 12, seed=4)
    assert other.clean != task.clean


def test_ioi_orders_and_corruptions(smol_tokenizer) -> None:
    abc = make_ioi(smol_tokenizer, 8, seed=1)
    swap = make_ioi(smol_tokenizer, 8, seed=1, corruption="swap")
    assert abc.clean == swap.clean and abc.meta["order"][:2] == ["ABBA", "BABA"]
    for i in range(8):
        io, s = abc.answer[i].strip(), abc.wrong[i].strip()
        clean = abc.clean[i].replace(",", " ").replace(".", " ").split()
        assert clean.count(io) == 1 and clean.count(s) == 2
        assert clean.index(io) < clean.index(s) if i % 2 == 0 else clean.index(s) < clean.index(io)
        assert io not in abc.corrupt[i] and s not in abc.corrupt[i]
        corrupt = swap.corrupt[i].replace(",", " ").replace(".", " ").split()
        assert corrupt.count(io) == 2 and corrupt.count(s) == 1
    assert len(set(abc.meta["template"])) > 1
    with pytest.raises(MechscopeError, match="abc, swap"):
        make_ioi(smol_tokenizer, 4, corruption="bca")
    with pytest.raises(MechscopeError, match="at least 1"):
        make_ioi(smol_tokenizer, 0)


def test_induction_from_token_ids_runs_on_a_tiny_model() -> None:
    task = make_induction(None, 4, seed=0, seq_len=6, vocab=range(VOCAB))
    batch = task.tokenize()
    assert batch.clean_tokens.shape == (4, 11)
    clean, corrupt = batch.clean_tokens, batch.corrupt_tokens
    assert torch.equal(clean[:, 6:], clean[:, :5]) and torch.equal(corrupt[:, :6], clean[:, :6])
    assert torch.equal(batch.answer_ids, clean[:, 5])
    assert not (clean == batch.wrong_ids[:, None]).any()
    scores = evaluate(HookedModel(tiny_model("llama")), batch)
    assert scores.clean.shape == scores.corrupt.shape == (4,)
    with pytest.raises(MechscopeError, match="distinct tokens"):
        make_induction(None, 4, seq_len=60, vocab=range(VOCAB))


def test_greater_than_single_digits(smol_tokenizer) -> None:
    assert digit_mode(smol_tokenizer) == "one"
    task = make_greater_than(smol_tokenizer, 6, seed=0)
    for i, yy in enumerate(task.meta["yy"]):
        d = yy // 10
        assert task.clean[i].endswith(f"{yy:02d} to the year {task.meta['century'][i]}")
        assert "01 to the year" in task.corrupt[i]
        assert (task.answer[i], task.wrong[i]) == (str(d + 1), str(d - 1))
        assert set(task.answer_set[i]) | set(task.wrong_set[i]) | {str(d)} == set("0123456789")


def test_greater_than_two_digit_tokens(pair_digit_tokenizer) -> None:
    assert digit_mode(pair_digit_tokenizer) == "two"
    task = make_greater_than(pair_digit_tokenizer, 5, seed=0)
    for i, yy in enumerate(task.meta["yy"]):
        assert (task.answer[i], task.wrong[i]) == (f"{yy + 1:02d}", f"{yy:02d}")
        assert len(task.answer_set[i]) + len(task.wrong_set[i]) == 100
    batch = task.tokenize(pair_digit_tokenizer, require_uniform=True)
    assert batch.answer_sets is not None and len(batch.answer_sets[0]) == 99 - task.meta["yy"][0]


def test_sva_flips_only_the_subject(smol_tokenizer) -> None:
    task = TASKS["sva"](smol_tokenizer, 6, seed=0)
    for i, (clean, corrupt) in enumerate(zip(task.clean, task.corrupt)):
        a, b = clean.split(), corrupt.split()
        assert [k for k in range(len(a)) if a[k] != b[k]] == [1]  # only the subject differs
        plural = task.meta["plural"][i]
        assert (task.answer[i], task.wrong[i]) == ((" are", " is") if plural else (" is", " are"))
    assert task.meta["plural"][:2] == [False, True]


def test_capitals_corrupt_to_another_country(smol_tokenizer) -> None:
    task = TASKS["capitals"](smol_tokenizer, 8, seed=0)
    assert all(c != o for c, o in zip(task.meta["country"], task.meta["other"]))
    assert all(a != w for a, w in zip(task.answer, task.wrong))
    with pytest.raises(MechscopeError, match="ask for n <=") as exc:
        TASKS["capitals"](smol_tokenizer, 1000)
    assert "\n" not in str(exc.value)
