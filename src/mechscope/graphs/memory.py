"""The memory an attribution graph needs, estimated before the run, and the batch it allows.

Fixed: the recorded attention patterns (``layers * heads * pos^2``), the per-layer MLP inputs,
outputs, reconstructions and errors (``4 * layers * pos * d_model``), the rows being computed
(``rows * sources``, twice: the rows and their normalised copy when pruning). Per target in a batch (one
copy of the frozen forward kept for the backward passes): about ``12 * pos * d_model`` saved
activations per layer plus its copy of the patterns, and the gradients of every layer's output.
``choose_batch`` takes the largest batch (at most 64) that fits the budget.
"""

from __future__ import annotations

import sys
from typing import Any

from mechscope.errors import MechscopeError

__all__ = ["choose_batch", "estimate", "size"]

GB = 1e9
MAX_BATCH = 64


def size(n: float) -> str:
    """Bytes as GB, MB or KB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if n >= scale / 10:
            return f"{n / scale:.2f} {unit}"
    return f"{n / 1e3:.1f} KB"


def estimate(dims: Any, n_pos: int, n_feat: int, n_rows: int, itemsize: int = 4) -> tuple[int, int]:
    """(fixed bytes, bytes per target in a batch) for a prompt of ``n_pos`` tokens."""
    t, d, n_layers, heads = n_pos, dims.d_model, dims.n_layers, dims.n_heads
    n_sources = n_feat + n_layers * t + t
    n_nodes = n_rows + n_layers * t + t
    fixed = itemsize * (n_layers * heads * t * t + 4 * n_layers * t * d + n_rows * n_sources)
    fixed += 12 * n_rows * n_nodes  # the graph's rows (float32) and their normalised copy
    per = itemsize * (n_layers * (12 * t * d + heads * t * t) + 3 * (n_layers + 1) * t * d)
    return fixed, per


def choose_batch(
    dims: Any, snap: Any, n_feat: int, n_rows: int, budget: float, log: Any = None
) -> int:
    """Targets per backward pass under ``budget`` bytes; prints the estimate (to ``log``)."""
    n_pos = int(snap.tokens.shape[0])
    fixed, per = estimate(dims, n_pos, n_feat, n_rows, snap.mlp_out.element_size())
    batch = int((budget - fixed) // per) if budget > fixed else 0
    if batch < 1:
        raise MechscopeError(
            f"a memory budget of {size(budget)} is too small for one chunk of this "
            f"{n_pos}-token prompt (it needs {size(fixed + per)}): raise --max-memory or "
            "shorten the prompt"
        )
    batch = min(batch, MAX_BATCH, max(1, n_rows))
    print(
        f"memory estimate: {size(fixed)} fixed + {size(per)} per target in a batch; "
        f"batch {batch} -> {size(fixed + batch * per)} (budget {size(budget)})",
        file=log or sys.stderr,
    )
    return batch
