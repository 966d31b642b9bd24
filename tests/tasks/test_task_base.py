"""Task validation and tokenisation: shapes, padding, and one-line errors."""

from __future__ import annotations

import pytest
import torch

from mechscope import HookedModel, MechscopeError
from mechscope.models.tiny import VOCAB, tiny_model
from mechscope.tasks import Task, TaskBatch


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def ids_task(**changes) -> Task:
    fields = {
        "name": "toy",
        "clean": [(1, 2, 3), (4, 5, 6, 7)],
        "corrupt": [(1, 9, 3), (4, 8, 6, 7)],
        "answer": [10, 11],
        "wrong": [12, 13],
    }
    return Task(**{**fields, **changes})


def test_token_id_task_tokenizes_without_a_tokenizer() -> None:
    batch = ids_task().tokenize()
    assert isinstance(batch, TaskBatch) and len(batch) == 2
    assert batch.clean_tokens.shape == batch.corrupt_tokens.shape == (2, 4)
    assert batch.clean_tokens[0, :3].tolist() == [1, 2, 3]
    assert batch.clean_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert batch.last_pos.tolist() == batch.corrupt_last_pos.tolist() == [2, 3]
    assert batch.answer_ids.tolist() == [10, 11] and batch.wrong_ids.tolist() == [12, 13]
    assert not batch.uniform


def test_flipped_swaps_runs_and_keeps_answers() -> None:
    batch = ids_task(corrupt=[(1, 9), (4, 8, 6, 7)]).tokenize(require_same_length=False)
    flipped = batch.flipped()
    assert torch.equal(flipped.clean_tokens, batch.corrupt_tokens)
    assert flipped.last_pos.tolist() == [1, 3] and flipped.corrupt_last_pos.tolist() == [2, 3]
    assert torch.equal(flipped.answer_ids, batch.answer_ids)


def test_pair_of_different_lengths_is_named() -> None:
    task = ids_task(corrupt=[(1, 9, 3), (4, 8, 6)])
    with pytest.raises(MechscopeError) as exc:
        task.tokenize()
    message = one_line(exc)
    assert "clean prompt 1 is 4 tokens" in message and "is 3" in message
    assert "position" in message
    assert task.tokenize(require_same_length=False).corrupt_last_pos.tolist() == [2, 2]


def test_require_uniform() -> None:
    with pytest.raises(MechscopeError, match="clean prompt 1 is 4 tokens") as exc:
        ids_task().tokenize(require_uniform=True)
    one_line(exc)
    same = ids_task(clean=[(1, 2, 3), (4, 5, 6)], corrupt=[(1, 9, 3), (4, 8, 6)])
    assert same.tokenize(require_uniform=True).uniform


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"clean": [], "corrupt": [], "answer": [], "wrong": []}, "no prompts"),
        ({"wrong": [12]}, "different lengths"),
        ({"clean": ["", "x"]}, "clean prompt 0 is empty"),
        ({"corrupt": [(1, 2), ()]}, "corrupt prompt 1 must be text"),
        ({"answer_set": [[1], [2]]}, "only one of answer_set"),
    ],
)
def test_bad_tasks_fail_at_construction(changes: dict, match: str) -> None:
    with pytest.raises(MechscopeError, match=match) as exc:
        ids_task(**changes)
    one_line(exc)


def test_bad_answers() -> None:
    with pytest.raises(MechscopeError, match="outside the vocabulary") as exc:
        ids_task(answer=[10, VOCAB]).tokenize(HookedModel(tiny_model("llama")))
    one_line(exc)
    with pytest.raises(MechscopeError, match="no tokenizer") as exc:
        ids_task(answer=[" Mary", 11]).tokenize()
    one_line(exc)
    with pytest.raises(MechscopeError, match="text prompts but no tokenizer"):
        ids_task(clean=["hello", (4, 5, 6, 7)]).tokenize()


def test_answer_of_several_tokens_is_named(smol_tokenizer) -> None:
    task = Task("t", ["When Mary and John"], ["When Anna and John"], [" Maryanne"], [" John"])
    with pytest.raises(MechscopeError) as exc:
        task.tokenize(smol_tokenizer)
    message = one_line(exc)
    assert "answer 0 ' Maryanne' is" in message and "tokens" in message and "not one" in message


def test_text_task_matches_the_tokenizer(smol_tokenizer) -> None:
    task = Task(
        "t", ["The capital of France is"], ["The capital of Spain is"], [" Paris"], [" Rome"]
    )
    batch = task.tokenize(smol_tokenizer, require_uniform=True)
    assert batch.clean_tokens[0].tolist() == smol_tokenizer("The capital of France is")["input_ids"]
    assert batch.answer_ids.tolist() == smol_tokenizer(" Paris")["input_ids"]
