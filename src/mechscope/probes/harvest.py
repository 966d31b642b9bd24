"""Harvest the activations probes read: one vector per example and site, one forward per batch.

Steps:

1. tokenise every distinct text once and resolve each example's position (an index, negative
   from the end, or the last token of a named substring), failing early on a bad one;
2. run the distinct texts in batches (sorted by length, right-padded: in a causal LM padding
   after a position never changes it), with one hook per matching site that keeps only the
   rows at the examples' positions, flattened to ``[example features]``; the forward stops
   once the last site has been read (no later layers, no unembedding);
3. return the features per site and the token id read by each example (for the control task).

Only the probe positions are kept, never full sequences, so memory is
``n_examples x features x n_sites`` floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.probes.data import ProbeData
from mechscope.progress import progress

Tensor = torch.Tensor

__all__ = ["Harvest", "harvest", "resolve_positions"]


@dataclass(frozen=True, eq=False)
class Harvest:
    """What the probes read: features per site, and the position and token of each example."""

    features: dict[str, Tensor]  # site -> [example features] float32
    positions: np.ndarray  # [example] non-negative token index read
    token_ids: np.ndarray  # [example] token id at that position


def resolve_positions(model: HookedModel, data: ProbeData) -> tuple[list[list[int]], np.ndarray]:
    """``(ids per distinct text, [example] position)``; raises on a position out of range."""
    if model.tokenizer is None:
        raise MechscopeError("this model has no tokenizer; probes need one to read texts")
    texts = list(dict.fromkeys(data.texts))
    encoded = {t: model.tokenizer(t, return_offsets_mapping=data_has_tokens(data)) for t in texts}
    positions = np.empty(len(data), dtype=np.int64)
    for i, text in enumerate(data.texts):
        enc = encoded[text]
        n = len(enc["input_ids"])
        if data.tokens[i] is not None:
            positions[i] = _substring_position(enc, text, data.tokens[i], data.where(i))
            continue
        pos = data.positions[i]
        if not -n <= pos < n:
            raise MechscopeError(
                f"{data.where(i)}: position {pos} is out of range for a text of {n} tokens; "
                f"use {-n}..{n - 1}"
            )
        positions[i] = pos % n
    return [list(encoded[t]["input_ids"]) for t in texts], positions


def data_has_tokens(data: ProbeData) -> bool:
    return any(t is not None for t in data.tokens)


def _substring_position(enc: Any, text: str, token: str, where: str) -> int:
    """The index of the last token overlapping the first occurrence of ``token`` in ``text``."""
    if "offset_mapping" not in enc:
        raise MechscopeError(f'{where}: this tokenizer gives no offsets; use "position" instead')
    end = text.index(token) + len(token)
    start = text.index(token)
    hits = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if a < end and b > start]
    if not hits:
        raise MechscopeError(f'{where}: no token covers "token" {token!r}; use "position"')
    return hits[-1]


def harvest(
    model: HookedModel,
    data: ProbeData,
    sites: Sequence[str],
    *,
    batch_size: int = 32,
    quiet: bool = False,
) -> Harvest:
    """Features of every example at every site (see the module docstring)."""
    _check_sites(model, sites)
    ids, positions = resolve_positions(model, data)
    text_index = {t: j for j, t in enumerate(dict.fromkeys(data.texts))}
    row_of = np.array([text_index[t] for t in data.texts])  # example -> distinct text
    token_ids = np.array([ids[r][p] for r, p in zip(row_of, positions, strict=True)])
    order = sorted(range(len(ids)), key=lambda j: (len(ids[j]), j))
    chunks: dict[str, list[Tensor]] = {s: [] for s in sites}
    taken: list[np.ndarray] = []
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    for batch in progress(batches, desc="probe activations", unit="batch", quiet=quiet):
        members = np.flatnonzero(np.isin(row_of, batch))  # the examples this batch serves
        local = {j: r for r, j in enumerate(batch)}
        rows = torch.tensor([local[int(row_of[e])] for e in members], dtype=torch.long)
        cols = torch.tensor(positions[members], dtype=torch.long)
        tokens, mask = _pad([ids[j] for j in batch], model)
        for name, value in _read(model, tokens, mask, sites, rows, cols).items():
            chunks[name].append(value)
        taken.append(members)
    index = np.concatenate(taken)
    inverse = torch.from_numpy(np.argsort(index))  # back to the examples' own order
    features = {s: torch.cat(chunks[s])[inverse] for s in sites}
    return Harvest(features, positions, token_ids)


def _read(
    model: HookedModel,
    tokens: Tensor,
    mask: Tensor,
    sites: Sequence[str],
    rows: Tensor,
    cols: Tensor,
) -> dict[str, Tensor]:
    """``{site: [len(rows) features]}``: the activations at ``(rows, cols)`` of one forward."""
    out: dict[str, Tensor] = {}

    def keep(t: Tensor, hook: Any) -> None:
        out[hook.name] = t[rows, cols].reshape(len(rows), -1).float().cpu()

    # the later layers and the unembedding are not needed
    with torch.no_grad(), model.hooks([(s, keep) for s in sites], stop_after=list(sites)):
        model(tokens, attention_mask=mask)
    if len(out) != len(sites):
        raise MechscopeError(f"sites {sorted(set(sites) - set(out))} never ran; cannot probe them")
    return out


def _pad(ids: list[list[int]], model: HookedModel) -> tuple[Tensor, Tensor]:
    n = max(len(i) for i in ids)
    tok = model.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    tokens = torch.full((len(ids), n), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), n), dtype=torch.long)
    for r, row in enumerate(ids):
        tokens[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    return tokens, mask


def _check_sites(model: HookedModel, sites: Sequence[str]) -> None:
    for name in sites:
        axes = model.sites[name].axes
        if len(axes) < 2 or axes[1] != "pos":
            raise MechscopeError(
                f"site {name} has shape [{' '.join(axes)}], with no position axis to read; "
                "probe a [batch pos ...] site such as blocks.*.hook_resid_post"
            )
