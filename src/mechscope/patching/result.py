"""The result of an activation-patching sweep: a frozen dataclass of plain tensors and floats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

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
    """

    sweep: str
    axes: tuple[str, ...]
    values: torch.Tensor
    clean: float
    corrupt: float
    direction: Direction

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
