"""Fixed-length token windows over a corpus, the input of every corpus-driven analysis.

A document is tokenised on its own and cut into consecutive windows of ``seq_len`` tokens (with
``prepend_bos`` the first token of every window is BOS and ``seq_len - 1`` come from the text); the
tail shorter than a window is dropped, so no window crosses a document boundary. With a ``seed`` the
order of documents is shuffled deterministically (a full permutation for cached token files, a
buffer of documents for streamed sources); ``seed=None`` keeps corpus order.

Corpora with ``cache_tokens`` (the built-in one) are tokenised once per tokenizer into
``~/.cache/mechscope/tokens/<corpus>-<tokenizer>/`` (``ids.npy`` uint32 + ``offsets.npy``, written
with :func:`mechscope.files.atomic_folder`, so a crash never leaves a half-written cache and two
processes building it at once both succeed).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mechscope.corpus.sources import Corpus
from mechscope.errors import MechscopeError
from mechscope.files import atomic_folder, cache_root

__all__ = ["batches", "token_cache_dir", "tokenize_corpus", "windows"]

SHUFFLE_BUFFER = 64  # documents shuffled together when a streamed corpus is read with a seed


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = (
        backend.to_str()
        if backend is not None
        else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def token_cache_dir(corpus: Corpus, tokenizer: Any, split: str) -> Path:
    root = cache_root()
    key = f"{corpus.name}-{corpus.fingerprint}-{_tokenizer_fingerprint(tokenizer)}-{split}"
    return root / "tokens" / key


def tokenize_corpus(corpus: Corpus, tokenizer: Any, split: str = "all") -> list[np.ndarray]:
    """Every document of ``split`` as a uint32 token array, from the cache when there is one."""
    folder = token_cache_dir(corpus, tokenizer, split)
    damaged = False
    try:
        ids = np.load(folder / "ids.npy", mmap_mode="r")
        offsets = np.load(folder / "offsets.npy")
        return [ids[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    except FileNotFoundError:
        pass  # no cache yet
    except (OSError, ValueError):
        damaged = True  # rebuild it and replace it
    docs = [
        np.asarray(d, dtype=np.uint32) for d in _encode(tokenizer, list(corpus.documents(split)))
    ]
    offsets = np.cumsum([0, *(len(d) for d in docs)], dtype=np.int64)
    with atomic_folder(folder, replace=damaged) as tmp:  # another builder may win: same tokens
        np.save(tmp / "ids.npy", np.concatenate(docs) if docs else np.zeros(0, np.uint32))
        np.save(tmp / "offsets.npy", offsets)
    return docs


def _streamed(corpus: Corpus, tokenizer: Any, split: str, seed: int | None) -> Iterator[np.ndarray]:
    rng = random.Random(seed)
    buffer: list[str] = []

    def drain() -> Iterator[np.ndarray]:
        if seed is not None:
            rng.shuffle(buffer)
        for ids in _encode(tokenizer, buffer):
            yield np.asarray(ids, dtype=np.uint32)
        buffer.clear()

    for doc in corpus.documents(split):
        buffer.append(doc)
        if len(buffer) == SHUFFLE_BUFFER:
            yield from drain()
    yield from drain()


def _documents(
    corpus: Corpus, tokenizer: Any, split: str, seed: int | None
) -> Iterator[np.ndarray]:
    if not corpus.cache_tokens:
        yield from _streamed(corpus, tokenizer, split, seed)
        return
    docs = tokenize_corpus(corpus, tokenizer, split)
    order = list(range(len(docs)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    for i in order:
        yield docs[i]


def windows(
    corpus: Corpus,
    tokenizer: Any,
    *,
    seq_len: int = 128,
    n_tokens: int | None = None,
    seed: int | None = 0,
    split: str = "all",
    prepend_bos: bool = False,
    per_document: int | None = None,
) -> Iterator[Tensor]:
    """Token windows ``[seq_len]`` (int64) until ``n_tokens`` tokens (all windows if ``None``).

    Documents come in a seeded order and each gives its consecutive windows, so a few thousand
    tokens come from one or two documents. ``per_document`` takes at most that many windows from
    each, evenly spaced through it: a small sample then spans many documents."""
    bos = tokenizer.bos_token_id if prepend_bos else None
    if prepend_bos and bos is None:
        raise MechscopeError("this tokenizer has no BOS token; use prepend_bos=False")
    body = seq_len - (bos is not None)
    if body < 1:
        raise MechscopeError(f"seq_len={seq_len} is too short; use at least 2")
    if n_tokens is not None and n_tokens < 1:
        raise MechscopeError(f"n_tokens={n_tokens} must be positive")
    if per_document is not None and per_document < 1:
        raise MechscopeError(f"per_document={per_document} must be positive")
    yielded = 0
    for doc in _documents(corpus, tokenizer, split, seed):
        starts = range(0, len(doc) - body + 1, body)
        if per_document is not None and len(starts) > per_document:
            starts = [
                starts[i] for i in np.linspace(0, len(starts) - 1, per_document).round().astype(int)
            ]
        for start in starts:
            ids = torch.from_numpy(doc[start : start + body].astype(np.int64))
            if bos is not None:
                ids = torch.cat([torch.tensor([bos]), ids])
            yield ids
            yielded += seq_len
            if n_tokens is not None and yielded >= n_tokens:
                return
    if yielded == 0:
        raise MechscopeError(
            f"corpus {corpus.name!r} has no document of {body} tokens or more; "
            "use a shorter seq_len or a larger corpus"
        )


def batches(
    corpus: Corpus,
    tokenizer: Any,
    *,
    batch_size: int = 8,
    seq_len: int = 128,
    n_tokens: int | None = None,
    seed: int | None = 0,
    split: str = "all",
    prepend_bos: bool = False,
) -> Iterator[Tensor]:
    """Batches ``[batch seq_len]`` of :func:`windows`; the last one may be smaller."""
    if batch_size < 1:
        raise MechscopeError(f"batch_size={batch_size} must be positive")
    rows: list[Tensor] = []
    for window in windows(
        corpus,
        tokenizer,
        seq_len=seq_len,
        n_tokens=n_tokens,
        seed=seed,
        split=split,
        prepend_bos=prepend_bos,
    ):
        rows.append(window)
        if len(rows) == batch_size:
            yield torch.stack(rows)
            rows = []
    if rows:
        yield torch.stack(rows)
