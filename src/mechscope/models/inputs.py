"""What each decoder layer was called with, so a forward can restart at any layer.

Recording the HF model's own layer arguments (masks, rotary embeddings, position ids) keeps
:meth:`HookedModel.run_from` free of architecture code: it just calls the remaining layers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mechscope.errors import MechscopeError


def _map(obj: Any, fn: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple):
        return tuple(_map(o, fn) for o in obj)
    if isinstance(obj, list):
        return [_map(o, fn) for o in obj]
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    return obj


@dataclass
class LayerInputs:
    """Per layer: the positional arguments after the hidden state, and the keyword arguments."""

    batch: int = 0
    args: dict[int, tuple] = field(default_factory=dict)
    kwargs: dict[int, dict[str, Any]] = field(default_factory=dict)

    def call(self, layer: int, batch: int) -> tuple[tuple, dict[str, Any]]:
        """The layer's arguments for a hidden state of ``batch`` rows (a multiple of the run's)."""
        if layer not in self.args:
            raise MechscopeError(f"no recorded inputs for layer {layer}; run a forward first")
        if batch == self.batch:
            return self.args[layer], self.kwargs[layer]
        if batch % self.batch:
            raise MechscopeError(
                f"batch of {batch} is not a multiple of the recorded batch of {self.batch}"
            )
        n = batch // self.batch

        def tile(t: torch.Tensor) -> torch.Tensor:
            rows = t.shape[0] if t.ndim else 0
            # batch-major [batch ...], or [batch * head ...] as BLOOM's ALiBi bias is laid out
            if rows == self.batch > 1 or (
                t.ndim >= 3 and rows > self.batch and rows % self.batch == 0
            ):
                return t.repeat(n, *([1] * (t.ndim - 1)))
            return t

        return _map(self.args[layer], tile), _map(self.kwargs[layer], tile)


@contextmanager
def capture_inputs(layers: nn.ModuleList) -> Iterator[LayerInputs]:
    inputs = LayerInputs()

    def make(i: int) -> Any:
        def pre(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            h = args[0] if args else kwargs["hidden_states"]
            inputs.batch = h.shape[0]
            inputs.args[i] = tuple(args[1:])
            inputs.kwargs[i] = {k: v for k, v in kwargs.items() if k != "hidden_states"}

        return pre

    handles = [m.register_forward_pre_hook(make(i), with_kwargs=True) for i, m in enumerate(layers)]
    try:
        yield inputs
    finally:
        for h in handles:
            h.remove()
