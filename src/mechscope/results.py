"""What every result type shares: the entries of largest magnitude (``top_abs``).

Result types (``PatchResult``, ``DLAResult``, ``AblationEffect``, ``Circuit``, ...) are frozen
dataclasses of tensors with a ``to_dict()`` of plain JSON values; their schemas are documented in
docs/circuits.md. Printing and reports rank their entries with :func:`top_abs`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def top_abs(values: Any, k: int) -> list[tuple[tuple[int, ...], float]]:
    """The ``k`` entries of largest |value| as ``(index, value)``, largest first (ties: first
    in row-major order). ``values`` is a tensor, an array or nested lists; NaN entries are last."""
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    a = np.asarray(values, dtype=np.float64)
    magnitude = np.nan_to_num(np.abs(a).ravel(), nan=-1.0)
    order = np.argsort(-magnitude, kind="stable")[: max(0, k)]
    return [
        (tuple(int(i) for i in np.unravel_index(j, a.shape)), float(a.ravel()[j])) for j in order
    ]
