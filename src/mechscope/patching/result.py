"""The result of an activation-patching sweep: a frozen dataclass of plain tensors and floats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from mechscope.errors import MechscopeError
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
        per_prompt: the metric of every prompt on each patched run, ``[*axes, prompt]``, with
            the unpatched runs' per-prompt ``prompt_clean`` and ``prompt_corrupt`` ``[prompt]``
            (None when the method gives only means): what :meth:`ci` resamples and
            :meth:`pvalues` tests.
    """

    sweep: str
    axes: tuple[str, ...]
    values: torch.Tensor
    clean: float
    corrupt: float
    direction: Direction
    method: str = "exact"
    per_prompt: torch.Tensor | None = None
    prompt_clean: torch.Tensor | None = None
    prompt_corrupt: torch.Tensor | None = None

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

    def ci(
        self, level: float = 0.95, n_boot: int = 1000, seed: int = 0, normalized: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(low, high) bootstrap percentile bounds of ``values`` (or of :meth:`normalized`, the
        clean and corrupted means resampled with the same prompts), shaped like ``values``,
        from resampling the prompts with replacement (:func:`mechscope.stats.bootstrap_ci`)."""
        from mechscope.stats import bootstrap_ci, normalized_ci

        rows = self._rows().numpy()
        if normalized:
            ends = self.prompt_clean.double().numpy(), self.prompt_corrupt.double().numpy()
            lo, hi = normalized_ci(rows, *ends, level=level, n_boot=n_boot, seed=seed)
        else:
            lo, hi = bootstrap_ci(rows, level=level, n_boot=n_boot, seed=seed)
        return _shaped(lo, self.values.shape), _shaped(hi, self.values.shape)

    def pvalues(self, n_perm: int = 2000, seed: int = 0) -> torch.Tensor:
        """Two-sided paired permutation p-value of every slice, shaped like ``values``: does
        patching it move the metric away from the unpatched run it was patched into (the
        corrupted run for ``denoise``, the clean run for ``noise``)? The control is that run,
        prompt by prompt; the shuffle swaps the labels "patched" / "unpatched" within prompts
        (:func:`mechscope.stats.signflip_pvalues`; exact for up to 10 prompts at the default
        budget). :func:`mechscope.stats.bh_adjust` gives the false-discovery rate over the map."""
        from mechscope.stats import signflip_pvalues

        rows = self._rows()
        base = self.prompt_corrupt if self.direction == "denoise" else self.prompt_clean
        diff = (rows - base.double()[:, None]).numpy()
        p = signflip_pvalues(diff, n_perm=n_perm, seed=seed)
        return _shaped(p, self.values.shape)

    def _rows(self) -> torch.Tensor:
        """``[prompt cells]`` float64: every slice's per-prompt value, one column per slice."""
        if self.per_prompt is None or self.prompt_clean is None or self.prompt_corrupt is None:
            raise MechscopeError(
                f"{self.method} {self.sweep} keeps no per-prompt values: no interval or p-value"
            )
        return self.per_prompt.reshape(-1, self.per_prompt.shape[-1]).T.double()

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


def _shaped(a: Any, shape: torch.Size) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32).reshape(shape)


def _json_list(values: torch.Tensor) -> Any:
    """Nested lists of ``values`` with NaN as None (JSON has no NaN)."""
    listed = values.tolist()
    if not bool(values.isnan().any()):
        return listed

    def clean(x: Any) -> Any:
        return [clean(v) for v in x] if isinstance(x, list) else (None if x != x else x)

    return clean(listed)
