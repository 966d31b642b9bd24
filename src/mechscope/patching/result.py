"""The result of an activation-patching sweep: a frozen dataclass of plain tensors and floats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from mechscope.results import top_abs

Direction = Literal["denoise", "noise"]


@dataclass(frozen=True)
class PatchResult:
    """Patched metric values of one sweep, averaged over prompts.

    Fields:
        sweep: the sweep's name in :data:`mechscope.patching.SWEEPS` (``"resid_pre"``, ...).
        axes: the names of ``values``' axes, e.g. ``("layer", "pos")``.
        values: the mean over prompts of the metric on each patched run, shape by ``axes``.
        clean: the mean metric on the unpatched clean run.
        corrupt: the mean metric on the unpatched corrupted run.
        direction: ``"denoise"`` (clean activations into the corrupted run) or ``"noise"``
            (corrupted activations into the clean run).
        method: how ``values`` were obtained (``"exact"``: one patched run per slice).
    """

    sweep: str
    axes: tuple[str, ...]
    values: torch.Tensor
    clean: float
    corrupt: float
    direction: Direction
    method: str = "exact"

    def __post_init__(self) -> None:
        if self.values.ndim != len(self.axes):
            raise ValueError(
                f"values has {self.values.ndim} axes but {len(self.axes)} names: {self.axes}"
            )

    def normalized(self) -> torch.Tensor:
        """``(values - corrupt) / (clean - corrupt)``: 0 is the corrupted metric, 1 the clean one.

        Meaningless (inf or NaN) when the clean and corrupted metrics coincide.
        """
        return (self.values - self.corrupt) / (self.clean - self.corrupt)

    def top(self, k: int = 10) -> list[tuple[dict[str, int], float]]:
        """The ``k`` slices whose normalised value (raw if undefined) is largest in magnitude,
        as ``({axis: index}, value)``."""
        shown = self.values if self._flat() else self.normalized()
        return [(dict(zip(self.axes, i)), v) for i, v in top_abs(shown, k)]

    def _flat(self) -> bool:
        return abs(self.clean - self.corrupt) <= 1e-9

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``sweep, method, direction, axes, clean, corrupt, values, normalized``
        (``values`` and ``normalized`` nested lists by ``axes``, None where a value is NaN, i.e.
        a layer not patched; ``normalized`` None when the clean and corrupted metrics coincide)."""
        return {
            "sweep": self.sweep,
            "method": self.method,
            "direction": self.direction,
            "axes": list(self.axes),
            "clean": self.clean,
            "corrupt": self.corrupt,
            "values": _json_list(self.values),
            "normalized": None if self._flat() else _json_list(self.normalized()),
        }


def _json_list(values: torch.Tensor) -> Any:
    """Nested lists of ``values`` with NaN as None (JSON has no NaN)."""
    listed = values.tolist()
    if not bool(values.isnan().any()):
        return listed

    def clean(x: Any) -> Any:
        return [clean(v) for v in x] if isinstance(x, list) else (None if x != x else x)

    return clean(listed)
