"""Compare two models layer by layer on the same text: :func:`compare_models`.

Steps: the corpus is cut into chunks read by both models (:mod:`mechscope.compare.align`); a batch
of chunks runs through each model with hooks on ``blocks.{L}.hook_resid_post`` of the chosen
layers (the forward stops after the last of them); the residuals at the aligned positions are
added to the running sums of :class:`~mechscope.compare.similarity.SimilarityStats`. Position 0 of
every chunk is left out by default: its residual is an outlier (the attention sink) in most
models and would dominate both scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mechscope.compare.align import Chunk, chunks
from mechscope.compare.similarity import Similarity, SimilarityStats
from mechscope.corpus import Corpus, load_corpus
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.progress import progress

__all__ = ["compare_models", "default_layers", "residuals", "site_activations"]

MAX_LAYERS = 12  # default layers per model: memory is O(La * Lb * d_a * d_b)


def default_layers(n_layers: int, most: int = MAX_LAYERS) -> list[int]:
    """Every layer for up to ``most`` layers, else ``most`` evenly spaced ones ending at the last."""
    if n_layers <= most:
        return list(range(n_layers))
    step = (n_layers - 1) / (most - 1)
    return sorted({round(i * step) for i in range(most)})


def _check_layers(layers: Sequence[int], model: HookedModel, which: str) -> list[int]:
    n = model.dims.n_layers
    bad = [layer for layer in layers if not 0 <= layer < n]
    if bad or not layers:
        raise MechscopeError(f"layers of model {which} must lie in [0, {n}), got {list(layers)}")
    return sorted(set(layers))


def site_activations(
    model: HookedModel, ids: list[list[int]], names: Sequence[str]
) -> tuple[Tensor, Tensor]:
    """The activations at hook ``names`` (sites of one vector per token, all of one width) for
    right-padded ``ids``: ``[batch pos site d]`` in float32, and the ``[batch pos]`` mask. The
    forward stops after the last of them."""
    n = max(len(i) for i in ids)
    tokens = torch.zeros(len(ids), n, dtype=torch.long)
    mask = torch.zeros(len(ids), n, dtype=torch.long)
    for row, i in enumerate(ids):
        tokens[row, : len(i)] = torch.tensor(i)
        mask[row, : len(i)] = 1
    names = list(names)
    kept: dict[str, Tensor] = {}

    def keep(t: Tensor, hook: Any) -> None:
        kept[hook.name] = t.detach()

    with torch.no_grad(), model.hooks([(name, keep) for name in names], stop_after=names):
        model.forward(tokens, mask)
    return torch.stack([kept[name] for name in names], dim=2).float(), mask


def residuals(
    model: HookedModel, ids: list[list[int]], layers: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """``resid_post`` of ``layers`` for right-padded ``ids``: ``[batch pos L d]`` and the mask."""
    return site_activations(model, ids, [f"blocks.{layer}.hook_resid_post" for layer in layers])


def _gather(acts: Tensor, chunk_positions: list[list[int]]) -> Tensor:
    rows = [acts[b, pos] for b, pos in enumerate(chunk_positions)]
    return torch.cat(rows) if rows else acts.new_zeros(0, *acts.shape[2:])


def compare_models(
    model_a: HookedModel,
    model_b: HookedModel,
    corpus: Corpus | str | None = None,
    *,
    n_tokens: int = 100_000,
    seq_len: int = 128,
    batch_size: int = 8,
    layers_a: Sequence[int] | None = None,
    layers_b: Sequence[int] | None = None,
    skip_first: bool = True,
    quiet: bool = False,
) -> Similarity:
    """Debiased linear CKA and Procrustes between every chosen layer of A and of B.

    ``n_tokens`` counts aligned token pairs; ``corpus`` is a :class:`Corpus` or a spec for
    :func:`mechscope.corpus.load_corpus` (None: the built-in corpus).
    """
    if n_tokens < 4:
        raise MechscopeError(f"--tokens must be at least 4, got {n_tokens}")
    if model_a.tokenizer is None or model_b.tokenizer is None:
        raise MechscopeError("both models need a tokenizer to be compared on text")
    corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    la = _check_layers(layers_a or default_layers(model_a.dims.n_layers), model_a, "A")
    lb = _check_layers(layers_b or default_layers(model_b.dims.n_layers), model_b, "B")
    seq_len = min(seq_len, model_a.dims.n_ctx, model_b.dims.n_ctx)
    stats = SimilarityStats()
    bar = progress(None, total=n_tokens, desc="compare", quiet=quiet, unit="tok")
    batch: list[Chunk] = []
    for chunk in chunks(corpus, model_a.tokenizer, model_b.tokenizer, seq_len=seq_len):
        batch.append(chunk)
        if len(batch) < batch_size:
            continue
        _add_batch(stats, model_a, model_b, batch, la, lb, skip_first, n_tokens - stats.n)
        batch = []
        bar.update(stats.n - bar.n)
        if stats.n >= n_tokens:
            break
    if batch and stats.n < n_tokens:
        _add_batch(stats, model_a, model_b, batch, la, lb, skip_first, n_tokens - stats.n)
    bar.close()
    result = stats.result()
    result.layers_a, result.layers_b = la, lb
    return result


def _add_batch(
    stats: SimilarityStats,
    model_a: HookedModel,
    model_b: HookedModel,
    batch: list[Chunk],
    la: list[int],
    lb: list[int],
    skip_first: bool,
    room: int,
) -> None:
    keep = [
        [(i, j) for i, j in zip(c.pos_a, c.pos_b, strict=True) if not (skip_first and i == 0)]
        for c in batch
    ]
    acts_a, _ = residuals(model_a, [c.ids_a for c in batch], la)
    same = model_b is model_a and lb == la and all(c.ids_a == c.ids_b for c in batch)
    acts_b = acts_a if same else residuals(model_b, [c.ids_b for c in batch], lb)[0]
    x = _gather(acts_a, [[i for i, _ in k] for k in keep])[:room]
    y = _gather(acts_b, [[j for _, j in k] for k in keep])[:room]
    stats.add(x, y)
