"""The same text read by two models: chunks of a corpus and the token positions that correspond.

Two models with different tokenizers see the same characters but not the same tokens. A
position of model A corresponds to one of model B when both tokens end at the same character:
there, both residual streams have read exactly the same text. Steps:

1. each document is cut into chunks of at most ``seq_len`` tokens of A (character spans taken
   from A's offsets) and each chunk is re-tokenized by both tokenizers (no special tokens);
   a chunk longer than ``seq_len`` for B is cut to B's ``seq_len`` tokens;
2. the aligned positions are the pairs ``(i, j)`` with ``end_A(i) == end_B(j)``; with one
   tokenizer they are all positions.

Offsets come from fast tokenizers (``return_offsets_mapping``); a slow one is a one-line error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mechscope.corpus import Corpus
from mechscope.errors import MechscopeError

__all__ = ["Chunk", "aligned_positions", "chunks", "same_tokenizer"]


@dataclass(frozen=True)
class Chunk:
    """One piece of text, its token ids under both tokenizers and the aligned positions."""

    text: str
    ids_a: list[int]
    ids_b: list[int]
    pos_a: list[int]
    pos_b: list[int]


def same_tokenizer(tok_a: Any, tok_b: Any) -> bool:
    """Whether two tokenizers map text to the same ids (same class and vocabulary)."""
    if tok_a is tok_b:
        return True
    return type(tok_a) is type(tok_b) and tok_a.get_vocab() == tok_b.get_vocab()


def _encode(tokenizer: Any, text: str, which: str) -> tuple[list[int], list[int]]:
    if not getattr(tokenizer, "is_fast", False):
        raise MechscopeError(
            f"model {which}'s tokenizer gives no character offsets (not a fast tokenizer), so its "
            "tokens cannot be aligned with the other model's; use a model with a fast tokenizer"
        )
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [end for _, end in enc["offset_mapping"]]


def aligned_positions(ends_a: list[int], ends_b: list[int]) -> tuple[list[int], list[int]]:
    """Pairs of positions whose tokens end at the same character; when several tokens end at one
    character (pieces of one multi-byte character), the last of them, which completes it."""
    last_a = {end: i for i, end in enumerate(ends_a)}
    last_b = {end: j for j, end in enumerate(ends_b)}
    shared = sorted(last_a.keys() & last_b.keys())
    return [last_a[e] for e in shared], [last_b[e] for e in shared]


def chunks(
    corpus: Corpus, tok_a: Any, tok_b: Any, *, seq_len: int = 128, split: str = "all"
) -> Iterator[Chunk]:
    """Chunks of the corpus's documents with their aligned positions (see the module doc)."""
    if seq_len < 2:
        raise MechscopeError(f"seq_len={seq_len} is too short; use at least 2")
    same = same_tokenizer(tok_a, tok_b)
    for doc in corpus.documents(split):
        ids, ends = _encode(tok_a, doc, "A")
        start_char = 0
        for start in range(0, len(ids), seq_len):
            end_char = ends[min(start + seq_len, len(ids)) - 1]
            text = doc[start_char:end_char]
            start_char = end_char
            if not text.strip():
                continue
            chunk = _chunk(text, tok_a, tok_b, seq_len, same)
            if chunk is not None:
                yield chunk


def _chunk(text: str, tok_a: Any, tok_b: Any, seq_len: int, same: bool) -> Chunk | None:
    ids_a, ends_a = _encode(tok_a, text, "A")
    ids_a, ends_a = ids_a[:seq_len], ends_a[:seq_len]
    if same:
        pos = list(range(len(ids_a)))
        return Chunk(text, ids_a, ids_a, pos, pos) if ids_a else None
    ids_b, ends_b = _encode(tok_b, text, "B")
    ids_b, ends_b = ids_b[:seq_len], ends_b[:seq_len]
    pos_a, pos_b = aligned_positions(ends_a, ends_b)
    return Chunk(text, ids_a, ids_b, pos_a, pos_b) if pos_a else None
