"""Repeated random token sequences, the probe every pattern-based head detector reads.

Each sequence is ``[bos] + x + x``: ``x`` is ``seq_len`` *distinct* tokens drawn at random from
a pool, so every token of the second copy has exactly one earlier occurrence (the duplicate-token
target) and exactly one token after that occurrence (the induction target), as in Olsson et al.
2022 ("In-context Learning and Induction Heads") and TransformerLens's head detector.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel

Tensor = torch.Tensor


@functools.lru_cache(maxsize=4)
def _word_tokens(tok: Any) -> tuple[int, ...]:
    from mechscope.tasks.induction import word_tokens

    try:
        return tuple(word_tokens(tok))
    except MechscopeError:
        return ()


def token_pool(model: HookedModel, need: int) -> list[int]:
    """Token ids to draw from: the tokenizer's ordinary word tokens, else every non-special id."""
    tok = model.tokenizer
    if tok is not None:
        words = list(_word_tokens(tok))  # decoding a 50k vocabulary takes ~1 s: done once
        if len(words) >= need:
            return words
        special = set(getattr(tok, "all_special_ids", []) or [])
        return [i for i in range(model.dims.d_vocab) if i not in special]
    return list(range(model.dims.d_vocab))


def bos_id(model: HookedModel) -> int | None:
    tok = model.tokenizer
    return None if tok is None else getattr(tok, "bos_token_id", None)


def repeated_tokens(
    model: HookedModel,
    n_seqs: int = 64,
    seq_len: int = 50,
    seed: int = 0,
    *,
    prepend_bos: bool | None = None,
    pool: Sequence[int] | None = None,
) -> Tensor:
    """Token ids [n_seqs, bos + 2 * seq_len]: ``[bos] + x + x`` with ``x`` distinct random tokens.

    ``prepend_bos=None`` prepends the tokenizer's BOS token when it has one. ``pool`` overrides
    the ids ``x`` is drawn from (default :func:`token_pool`).
    """
    if n_seqs < 1 or seq_len < 2:
        raise MechscopeError(f"need n_seqs >= 1 and seq_len >= 2, got {n_seqs} and {seq_len}")
    bos = bos_id(model)
    if prepend_bos is None:
        prepend_bos = bos is not None
    if prepend_bos and bos is None:
        raise MechscopeError("prepend_bos=True but the model has no BOS token; pass False")
    length = 2 * seq_len + int(prepend_bos)
    if length > model.dims.n_ctx:
        raise MechscopeError(
            f"2 x seq_len{' + BOS' if prepend_bos else ''} = {length} tokens exceeds the "
            f"model's context of {model.dims.n_ctx}; pass a smaller seq_len"
        )
    ids = torch.tensor(sorted(set(pool if pool is not None else token_pool(model, seq_len))))
    if len(ids) < seq_len:
        raise MechscopeError(
            f"only {len(ids)} distinct tokens to draw from, fewer than seq_len={seq_len}; "
            "pass a smaller seq_len"
        )
    gen = torch.Generator().manual_seed(seed)
    x = torch.stack([ids[torch.randperm(len(ids), generator=gen)[:seq_len]] for _ in range(n_seqs)])
    parts = [x, x]
    if prepend_bos:
        parts.insert(0, torch.full((n_seqs, 1), bos, dtype=torch.long))
    return torch.cat(parts, dim=1)
