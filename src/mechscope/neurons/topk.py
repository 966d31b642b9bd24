"""Running top-k of max-activating windows for many units at once, merged batch by batch.

For every unit the state keeps the ``k`` windows with the highest maximum activation seen so far:
the value, the window's number in the stream, the position of the maximum, and (for highlighting)
the window's tokens and the unit's activation at every position of it. A batch is merged with
one stable sort per unit over ``k + batch`` candidates, so ties go to the earlier window and the
result equals a brute-force top-k over all windows at once, whatever the batch size.

Memory is bounded by the state: ``unit * k * seq_len`` activations (float32) and tokens (int32)
plus three ``[unit k]`` tensors, i.e. about ``8 * unit * k * seq_len`` bytes (15.7 MB for 1536
neurons, k=20, seq_len=64), and one ``[unit k+batch seq_len]`` buffer per merge.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor

__all__ = ["TopK", "empty_topk", "update_topk"]


@dataclass(frozen=True, eq=False)
class TopK:
    """Per unit, the top ``k`` windows by maximum activation, best first.

    Empty slots (fewer than ``k`` windows seen) have value ``-inf`` and window ``-1``.
    """

    values: Tensor  # [unit k] float32: the window's maximum activation
    windows: Tensor  # [unit k] int64: the window's number in the stream
    positions: Tensor  # [unit k] int64: where in the window the maximum is (first if tied)
    acts: Tensor  # [unit k seq_len] float32: the unit's activation at every position
    tokens: Tensor  # [unit k seq_len] int32: the window's token ids

    @property
    def k(self) -> int:
        return self.values.shape[1]


def empty_topk(n_units: int, k: int, seq_len: int, fill: float = float("-inf")) -> TopK:
    """A state with no window yet (values ``fill``: -inf for a top-k, +inf for a bottom-k)."""
    return TopK(
        values=torch.full((n_units, k), fill),
        windows=torch.full((n_units, k), -1, dtype=torch.long),
        positions=torch.zeros((n_units, k), dtype=torch.long),
        acts=torch.zeros((n_units, k, seq_len)),
        tokens=torch.zeros((n_units, k, seq_len), dtype=torch.int32),
    )


def update_topk(
    state: TopK,
    acts: Tensor,
    tokens: Tensor,
    first_window: int,
    start: int = 0,
    lowest: bool = False,
) -> TopK:
    """Merge a batch: ``acts`` [batch pos unit] of the windows ``tokens`` [batch pos].

    The batch's windows are numbered ``first_window, first_window + 1, ...``. A window ranks by its
    maximum over positions ``start:`` (1 leaves out the first position); the kept rows still hold
    every position, and positions count from the window's start. ``lowest=True`` keeps the
    windows of smallest maximum instead (ascending; start from ``empty_topk(fill=inf)``).
    The result's ``acts`` and ``tokens`` are ``state``'s, updated in place.
    """
    acts = acts.float().cpu()
    batch, seq_len, n_units = acts.shape
    k = state.k
    best, where = acts[:, start:].max(dim=1)  # [batch unit]; max() returns the first on ties
    where = where + start
    numbers = torch.arange(first_window, first_window + batch)
    values = torch.cat([state.values, best.T], dim=1)  # [unit k+batch]
    # old entries come first and are sorted (value, then window asc): a stable sort keeps that
    order = torch.sort(values, dim=1, descending=not lowest, stable=True).indices[:, :k]
    windows = torch.cat([state.windows, numbers.expand(n_units, batch)], dim=1)
    positions = torch.cat([state.positions, where.T], dim=1)
    # only units whose kept rows changed are gathered (late in a pass most batches change few),
    # into the old state's tensors: the result shares ``acts`` and ``tokens`` with ``state``
    changed = (order != torch.arange(k)).any(1).nonzero().flatten()
    out_acts, out_tokens = state.acts, state.tokens
    if len(changed):
        rows = order[changed][..., None].expand(-1, -1, seq_len)  # [changed k pos]
        cand_acts = torch.cat([state.acts[changed], acts.permute(2, 0, 1)[changed]], dim=1)
        batch_tokens = tokens.to(torch.int32).cpu().expand(len(changed), batch, seq_len)
        cand_tokens = torch.cat([state.tokens[changed], batch_tokens], dim=1)
        out_acts[changed] = cand_acts.gather(1, rows)
        out_tokens[changed] = cand_tokens.gather(1, rows)
    return TopK(
        values=values.gather(1, order),
        windows=windows.gather(1, order),
        positions=positions.gather(1, order),
        acts=out_acts,
        tokens=out_tokens,
    )


def window_order(primary: Tensor, windows: Tensor, descending: bool) -> Tensor:
    """Indices sorting each row by ``primary`` (ties: smaller window number first)."""
    by_window = torch.sort(windows, dim=1, stable=True).indices
    inner = torch.sort(primary.gather(1, by_window), dim=1, descending=descending, stable=True)
    return by_window.gather(1, inner.indices)


def merge_topk(a: TopK, b: TopK, lowest: bool = False) -> TopK:
    """The top-k (``lowest``: bottom-k) of the windows of two states over disjoint windows, in the
    one-pass order (value, then the smaller window number)."""
    cat = {f: torch.cat([getattr(a, f), getattr(b, f)], dim=1) for f in vars(a)}
    order = window_order(cat["values"], cat["windows"], descending=not lowest)[:, : a.k]
    rows = order[..., None].expand(-1, -1, a.acts.shape[-1])
    return TopK(**{f: v.gather(1, rows if v.dim() == 3 else order) for f, v in cat.items()})
