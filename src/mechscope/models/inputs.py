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

CACHE_KWARGS = ("cache", "layer_past")  # the decoder layers' key/value cache argument, by family


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
    positions: dict[int, int] = field(default_factory=dict)  # per layer: the run's positions
    args: dict[int, tuple] = field(default_factory=dict)
    kwargs: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def cache_kwarg(self) -> str | None:
        """The layers' key/value cache argument (Llama-style and Mixtral: ``cache``, GPT-NeoX:
        ``layer_past``), or None (GPT-2 passes an encoder-decoder cache: no position reuse)."""
        return next((k for k in CACHE_KWARGS if k in self.kwargs.get(0, {})), None)

    def call(
        self, layer: int, batch: int, hidden: torch.Tensor | None = None, kv_cache: Any = None
    ) -> tuple[tuple, dict[str, Any]]:
        """The layer's arguments for a hidden state of ``batch`` rows (a multiple of the run's).

        With ``kv_cache`` (anything with the HF cache's ``update(key, value, layer_idx, ...)``),
        ``hidden`` [rows pos-p0 d_model] holds the last positions only, ``p0..``: the arguments are
        cut to those query positions and the cache supplies the keys and values before them.
        """
        args, kwargs = self._tiled(layer, batch)
        if kv_cache is None:
            return args, kwargs
        name = self.cache_kwarg
        if name is None or hidden is None:
            raise MechscopeError(
                "this model's layers take no key/value cache argument; run every position "
                "(kv_cache=None)"
            )
        pos = self.positions[layer]
        p0 = pos - hidden.shape[1]
        kwargs = {k: _cut(k, v, p0, pos, hidden.device) for k, v in kwargs.items()}
        kwargs[name] = kv_cache
        return args, kwargs

    def _tiled(self, layer: int, batch: int) -> tuple[tuple, dict[str, Any]]:
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


def _cut(name: str, value: Any, p0: int, pos: int, device: torch.device) -> Any:
    """A layer argument restricted to query positions ``p0..pos-1``."""
    if p0 == 0:
        return value
    if name == "position_embeddings" and value is not None:
        return tuple(t[..., p0:, :] for t in value)
    if name in ("position_ids", "cache_position") and isinstance(value, torch.Tensor):
        return value[..., p0:]
    if name == "attention_mask":
        if value is None:  # causal without padding: make the offset explicit
            return torch.ones(pos - p0, pos, dtype=torch.bool, device=device).tril(p0)[None, None]
        return value[..., p0:, :]
    return value


@contextmanager
def capture_inputs(layers: nn.ModuleList) -> Iterator[LayerInputs]:
    inputs = LayerInputs()

    def make(i: int) -> Any:
        def pre(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            h = args[0] if args else kwargs["hidden_states"]
            inputs.batch = h.shape[0]
            inputs.positions[i] = h.shape[1]
            inputs.args[i] = tuple(args[1:])
            inputs.kwargs[i] = {k: v for k, v in kwargs.items() if k != "hidden_states"}

        return pre

    handles = [m.register_forward_pre_hook(make(i), with_kwargs=True) for i, m in enumerate(layers)]
    try:
        yield inputs
    finally:
        for h in handles:
            h.remove()
