"""Tokenizer helpers shared by the task generators: one-token word filters and length groups.

Generators only call ``tokenizer(text, add_special_tokens=...)["input_ids"]``, ``decode`` and
``len(tokenizer)``, so any Hugging Face tokenizer (or a small stand-in with those members) works.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

from mechscope.errors import MechscopeError

T = TypeVar("T")


def words(text: str) -> tuple[str, ...]:
    """A word list written as one whitespace-separated string."""
    return tuple(text.split())


def word_pairs(text: str) -> tuple[tuple[str, str], ...]:
    """Pairs written as ``a:b`` words in one whitespace-separated string."""
    return tuple((a, b) for a, b in (w.split(":") for w in text.split()))


def tokenizer_of(model_or_tokenizer: Any) -> Any:
    """The tokenizer itself, or a :class:`HookedModel`'s tokenizer (None stays None)."""
    from mechscope.models.hooked import HookedModel

    if isinstance(model_or_tokenizer, HookedModel):
        return model_or_tokenizer.tokenizer
    return model_or_tokenizer


def need_tokenizer(tokenizer: Any, task: str) -> Any:
    """The tokenizer, or a one-line error if there is none."""
    tokenizer = tokenizer_of(tokenizer)
    if tokenizer is None:
        raise MechscopeError(f"task {task!r} builds text prompts and needs a tokenizer; pass one")
    return tokenizer


def encode(tokenizer: Any, text: str, *, special: bool = False) -> list[int]:
    """Token ids of ``text``; ``special=True`` lets the tokenizer add its BOS/EOS as for a prompt."""
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def n_tokens(tokenizer: Any, text: str) -> int:
    return len(encode(tokenizer, text))


def pieces(tokenizer: Any, text: str) -> list[str]:
    """How ``text`` splits, as decoded strings (for error messages and tokenizer checks)."""
    return [tokenizer.decode([i]) for i in encode(tokenizer, text)]


def one_token(tokenizer: Any, words: Iterable[str], prefix: str = " ") -> list[str]:
    """The words for which ``prefix + word`` is exactly one token, in their given order."""
    return [w for w in words if n_tokens(tokenizer, prefix + w) == 1]


def largest_group(items: Sequence[T], key: Callable[[T], Hashable]) -> list[T]:
    """The largest set of items sharing one key (ties go to the key seen first), in order."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    if not groups:
        return []
    return max(groups.values(), key=len)


def check_pool(pool: Sequence[Any], need: int, task: str, what: str) -> None:
    """Fail early when a tokenizer leaves too few usable words for a generator."""
    if len(pool) < need:
        raise MechscopeError(
            f"task {task!r}: only {len(pool)} {what} are one token for this tokenizer, need "
            f"{need}; use a tokenizer with a larger vocabulary or a user task (.jsonl)"
        )


def check_n(n: int, task: str, limit: int | None = None, what: str = "prompts") -> None:
    if n < 1:
        raise MechscopeError(f"task {task!r}: n must be at least 1, got {n}")
    if limit is not None and n > limit:
        raise MechscopeError(
            f"task {task!r} has only {limit} distinct {what} for this tokenizer; ask for n <= {limit}"
        )
