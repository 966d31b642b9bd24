"""Tasks: clean and corrupted prompts with one correct and one wrong next token per prompt.

A :class:`Task` is plain data (text or token ids); :meth:`Task.tokenize` turns it into a
:class:`TaskBatch` of tensors that metrics and patching read. Tokenising validates everything a
position-wise sweep relies on, failing with one-line errors: every clean prompt has as many tokens
as its corrupted twin, every answer is exactly one token, and (on request) every prompt has the
same length.

A prompt is either text or a tuple of token ids (for tasks built from tokens, such as induction);
an answer is text (usually with a leading space, ``" Mary"``) or a token id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from mechscope.errors import MechscopeError
from mechscope.tasks.vocab import encode, pieces, tokenizer_of

Tensor = torch.Tensor
Prompt = str | tuple[int, ...]  # text, or token ids
Answer = str | int  # text (one token), or a token id
FIELDS = ("clean", "corrupt", "answer", "wrong")


@dataclass(frozen=True)
class Task:
    """Prompts and answers for one behaviour; everything but ``name`` is per prompt.

    ``answer_set`` / ``wrong_set`` optionally list, per prompt, every token counted as right or
    wrong by the ``prob_diff`` metric (greater-than uses them). ``meta`` is provenance only
    (generator, seed, options, per-prompt details); nothing that runs reads it.
    """

    name: str
    clean: Sequence[Prompt]
    corrupt: Sequence[Prompt]
    answer: Sequence[Answer]
    wrong: Sequence[Answer]
    meta: Mapping[str, Any] = field(default_factory=dict)
    answer_set: Sequence[Sequence[Answer]] | None = None
    wrong_set: Sequence[Sequence[Answer]] | None = None

    def __post_init__(self) -> None:
        if not self.clean:
            raise MechscopeError(f"task {self.name!r} has no prompts; give at least one")
        lists = {f: getattr(self, f) for f in FIELDS}
        lists.update({f: getattr(self, f) for f in ("answer_set", "wrong_set") if getattr(self, f)})
        sizes = {f: len(v) for f, v in lists.items()}
        if len(set(sizes.values())) > 1:
            have = ", ".join(f"{f}={k}" for f, k in sizes.items())
            raise MechscopeError(
                f"task {self.name!r} has lists of different lengths ({have}); give one per prompt"
            )
        for f in ("clean", "corrupt"):
            for i, p in enumerate(lists[f]):
                _check_prompt(p, f"task {self.name!r}: {f} prompt {i}")
        if (self.answer_set is None) != (self.wrong_set is None):
            raise MechscopeError(
                f"task {self.name!r} has only one of answer_set and wrong_set; give both or neither"
            )

    def __len__(self) -> int:
        return len(self.clean)

    def tokenize(
        self,
        model_or_tokenizer: Any = None,
        *,
        require_same_length: bool = True,
        require_uniform: bool = False,
        prepend_bos: bool = False,
    ) -> TaskBatch:
        """Tensors for the task; see :func:`tokenize_task`."""
        return tokenize_task(
            self,
            model_or_tokenizer,
            require_same_length=require_same_length,
            require_uniform=require_uniform,
            prepend_bos=prepend_bos,
        )


@dataclass(frozen=True)
class TaskBatch:
    """A tokenised task; prompts are right-padded, so read each one at its ``last_pos``.

    Shapes: tokens and masks ``[batch pos]``; ``answer_ids``, ``wrong_ids``, ``last_pos`` and
    ``corrupt_last_pos`` ``[batch]``. ``answer_sets`` / ``wrong_sets`` are per-prompt token-id
    tuples for ``prob_diff`` (None when the task has none).
    """

    name: str
    clean_tokens: Tensor
    corrupt_tokens: Tensor
    clean_mask: Tensor
    corrupt_mask: Tensor
    answer_ids: Tensor
    wrong_ids: Tensor
    last_pos: Tensor
    corrupt_last_pos: Tensor
    answer_sets: tuple[tuple[int, ...], ...] | None = None
    wrong_sets: tuple[tuple[int, ...], ...] | None = None

    def __len__(self) -> int:
        return self.clean_tokens.shape[0]

    @property
    def uniform(self) -> bool:
        """Whether every clean and corrupted prompt has the same number of tokens."""
        lengths = torch.cat([self.last_pos, self.corrupt_last_pos])
        return bool((lengths == lengths[0]).all())

    def flipped(self) -> TaskBatch:
        """The batch with clean and corrupted runs swapped (answers kept).

        Metrics read ``last_pos``; when a pair's lengths differ, score the corrupted run's logits
        with ``metric(logits, batch.flipped())``.
        """
        return replace(
            self,
            clean_tokens=self.corrupt_tokens,
            corrupt_tokens=self.clean_tokens,
            clean_mask=self.corrupt_mask,
            corrupt_mask=self.clean_mask,
            last_pos=self.corrupt_last_pos,
            corrupt_last_pos=self.last_pos,
        )

    def require_aligned(self) -> TaskBatch:
        """The batch itself, after checking that each clean prompt aligns token by token with its
        corrupted twin (same shape and attention mask), as patching and circuits need."""
        check_aligned(self.clean_tokens, self.corrupt_tokens, self.clean_mask, self.corrupt_mask)
        return self

    def to(self, device: str | torch.device) -> TaskBatch:
        tensors = {k: v.to(device) for k, v in vars(self).items() if isinstance(v, Tensor)}
        return replace(self, **tensors)


def check_aligned(
    clean: Tensor, corrupt: Tensor, clean_mask: Tensor | None, corrupt_mask: Tensor | None
) -> None:
    """Clean and corrupted token ids [batch pos] of one shape, with equal masks (None: all ones).

    Every analysis of paired prompts (patching, path and attribution patching, circuits) patches
    position p of one run into position p of the other, so the pairs must align.
    """
    if clean.ndim != 2 or corrupt.ndim != 2:
        raise MechscopeError(
            f"tokens must be [batch pos], got {tuple(clean.shape)} and {tuple(corrupt.shape)}"
        )
    if clean.shape != corrupt.shape:
        raise MechscopeError(
            "clean and corrupted prompts have different token lengths "
            f"({tuple(clean.shape)} vs {tuple(corrupt.shape)}); patching needs aligned positions, "
            "so choose prompt pairs with the same number of tokens"
        )
    for name, mask in (("attention_mask", clean_mask), ("corrupted attention_mask", corrupt_mask)):
        if mask is not None and mask.shape != clean.shape:
            raise MechscopeError(
                f"{name} has shape {tuple(mask.shape)}, tokens have {tuple(clean.shape)}"
            )
    both = clean_mask is not None and corrupt_mask is not None
    if both and not torch.equal(clean_mask.bool(), corrupt_mask.bool()):  # type: ignore[union-attr]
        raise MechscopeError(
            "clean and corrupted prompts must align token by token (same lengths and masks); "
            "tokenize the task with require_same_length=True"
        )


def _check_prompt(prompt: Any, where: str) -> None:
    if isinstance(prompt, str):
        if not prompt:
            raise MechscopeError(f"{where} is empty; give some text")
        return
    if (
        isinstance(prompt, Sequence)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    ):
        return
    raise MechscopeError(f"{where} must be text or a non-empty list of token ids, not {prompt!r}")


def tokenize_task(
    task: Task,
    model_or_tokenizer: Any = None,
    *,
    require_same_length: bool = True,
    require_uniform: bool = False,
    prepend_bos: bool = False,
) -> TaskBatch:
    """Tokenise and validate ``task`` (needs a tokenizer only if it holds text).

    ``require_same_length`` checks that each clean prompt and its corrupted twin have the same
    number of tokens (sweeps by position need aligned positions). ``require_uniform`` also checks
    that all prompts share one length. ``prepend_bos`` adds the tokenizer's BOS to text prompts.
    """
    tok = tokenizer_of(model_or_tokenizer)
    vocab = _vocab_size(model_or_tokenizer, tok)
    clean = [_prompt_ids(task, tok, p, prepend_bos) for p in task.clean]
    corrupt = [_prompt_ids(task, tok, p, prepend_bos) for p in task.corrupt]
    if require_same_length:
        _check_pairs(task.name, clean, corrupt)
    if require_uniform:
        _check_uniform(task.name, clean + corrupt, len(clean))
    answer = [_answer_id(task.name, tok, a, "answer", i, vocab) for i, a in enumerate(task.answer)]
    wrong = [_answer_id(task.name, tok, a, "wrong", i, vocab) for i, a in enumerate(task.wrong)]
    sets: dict[str, Any] = {"answer_sets": None, "wrong_sets": None}
    for key, given in (("answer_sets", task.answer_set), ("wrong_sets", task.wrong_set)):
        if given is not None:
            what = key[:-5] + " set"
            sets[key] = tuple(
                tuple(_answer_id(task.name, tok, a, what, i, vocab) for a in row)
                for i, row in enumerate(given)
            )
    pad = _pad_id(tok)
    clean_tokens, clean_mask = _pad(clean, pad)
    corrupt_tokens, corrupt_mask = _pad(corrupt, pad)
    return TaskBatch(
        name=task.name,
        clean_tokens=clean_tokens,
        corrupt_tokens=corrupt_tokens,
        clean_mask=clean_mask,
        corrupt_mask=corrupt_mask,
        answer_ids=torch.tensor(answer, dtype=torch.long),
        wrong_ids=torch.tensor(wrong, dtype=torch.long),
        last_pos=torch.tensor([len(i) - 1 for i in clean], dtype=torch.long),
        corrupt_last_pos=torch.tensor([len(i) - 1 for i in corrupt], dtype=torch.long),
        **sets,
    )


def _prompt_ids(task: Task, tok: Any, prompt: Prompt, prepend_bos: bool) -> list[int]:
    if not isinstance(prompt, str):
        return list(prompt)
    if tok is None:
        raise MechscopeError(
            f"task {task.name!r} has text prompts but no tokenizer; pass a tokenizer or a model"
        )
    ids = encode(tok, prompt, special=True)
    bos = getattr(tok, "bos_token_id", None)
    if prepend_bos and bos is not None and ids[:1] != [bos]:
        ids = [bos, *ids]
    return ids


def _check_pairs(name: str, clean: list[list[int]], corrupt: list[list[int]]) -> None:
    for i, (a, b) in enumerate(zip(clean, corrupt)):
        if len(a) != len(b):
            raise MechscopeError(
                f"task {name!r}: clean prompt {i} is {len(a)} tokens but its corrupted prompt is "
                f"{len(b)}; sweeps by position need equal lengths (fix pair {i}, or pass "
                "require_same_length=False)"
            )


def _check_uniform(name: str, prompts: list[list[int]], n: int) -> None:
    for i, ids in enumerate(prompts):
        if len(ids) != len(prompts[0]):
            which = f"clean prompt {i}" if i < n else f"corrupted prompt {i - n}"
            raise MechscopeError(
                f"task {name!r}: {which} is {len(ids)} tokens but clean prompt 0 is "
                f"{len(prompts[0])}; a uniform batch needs one length (generate with "
                "uniform=True, or pass require_uniform=False)"
            )


def _answer_id(name: str, tok: Any, answer: Answer, what: str, i: int, vocab: int | None) -> int:
    if isinstance(answer, bool) or not isinstance(answer, (str, int)):
        raise MechscopeError(
            f"task {name!r}: {what} {i} must be text or a token id, not {answer!r}"
        )
    if isinstance(answer, int):
        if answer < 0 or (vocab is not None and answer >= vocab):
            raise MechscopeError(
                f"task {name!r}: {what} {i} is token id {answer}, outside the vocabulary "
                f"[0, {vocab})"
            )
        return answer
    if tok is None:
        raise MechscopeError(
            f"task {name!r} has text answers but no tokenizer; pass a tokenizer or a model"
        )
    ids = encode(tok, answer)
    if len(ids) != 1:
        raise MechscopeError(
            f"task {name!r}: {what} {i} {answer!r} is {len(ids)} tokens "
            f"{pieces(tok, answer)}, not one; metrics score a single next token, so pick a "
            "one-token answer (mind the leading space)"
        )
    return ids[0]


def _vocab_size(model_or_tokenizer: Any, tok: Any) -> int | None:
    dims = getattr(model_or_tokenizer, "dims", None)
    if dims is not None:
        return int(dims.d_vocab)
    try:
        return len(tok) if tok is not None else None
    except TypeError:
        return None


def _pad_id(tok: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tok, attr, None)
        if value is not None:
            return int(value)
    return 0


def _pad(rows: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    """Right-pad to ``[batch pos]`` tokens and mask (as :meth:`HookedModel.tokenize` does)."""
    n = max(len(r) for r in rows)
    tokens = torch.full((len(rows), n), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return tokens, mask
