"""The memory an attribution graph needs, estimated before the run, and the batch it allows.

Fixed: the recorded attention patterns (``layers * heads * pos^2``), the per-layer MLP inputs,
outputs, reconstructions and errors (``4 * layers * pos * d_model``), the one frozen forward
kept for the backward passes (about ``12 * pos * d_model`` saved activations per layer, and one
layer's attention scores while it runs), the active features' scaled decoders (``features *
n_out * d_model``, twice for the chunks' padding), the rows being computed (``rows * sources``,
and the graph's rows and their normalised copy when pruning). Per target in a batch (one
vectorised backward pass): its injected vectors and the gradients of every layer's output
(``2 * (layers + 1) * pos * d_model``), the backward pass's buffers in flight (about ``12 * pos
* d_model``) and its row. ``choose_batch`` takes the largest batch (at most 64) that fits the
budget.
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


def estimate(
    dims: Any, n_pos: int, n_feat: int, n_rows: int, itemsize: int = 4, n_out: float = 1.0
) -> tuple[int, int]:
    """(fixed bytes, bytes per target in a batch) for a prompt of ``n_pos`` tokens whose
    ``n_feat`` active features write ``n_out`` layers each on average."""
    t, d, n_layers, heads = n_pos, dims.d_model, dims.n_layers, dims.n_heads
    n_sources = n_feat + n_layers * t + t
    n_nodes = n_rows + n_layers * t + t
    fixed = n_layers * heads * t * t + 4 * n_layers * t * d + n_rows * n_sources
    fixed += n_layers * 12 * t * d + heads * t * t + int(2 * n_feat * n_out * d)
    fixed = itemsize * fixed + 12 * n_rows * n_nodes  # + the graph's rows and normalised copy
    per = itemsize * (2 * (n_layers + 1) * t * d + 12 * t * d + n_sources)
    return fixed, per


def choose_batch(
    dims: Any,
    snap: Any,
    n_feat: int,
    n_rows: int,
    budget: float,
    log: Any = None,
    n_out: float = 1.0,
) -> int:
    """Targets per backward pass under ``budget`` bytes; prints the estimate (to ``log``)."""
    n_pos = int(snap.tokens.shape[0])
    fixed, per = estimate(dims, n_pos, n_feat, n_rows, snap.mlp_out.element_size(), n_out)
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
