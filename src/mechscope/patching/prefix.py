"""Position reuse: recompute only positions ``p0..`` and take the prefix's keys and values as given.

Attention is causal, so a patch at position ``p`` leaves every position before ``p`` unchanged in
every layer. A forward for variants patched at positions ``>= p0`` therefore:

1. records, once, the keys and values (after rotary embedding) of every layer in the base run,
   by handing each HF layer a duck-typed cache that keeps what ``update`` receives;
2. runs layers ``L..n-1`` on the residual of positions ``p0..pos-1`` only, with the layers'
   recorded arguments cut to those positions (rotary tables, position ids, the attention mask as
   an explicit causal mask with offset) and a cache that prepends the recorded prefix keys and
   values in ``update``;
3. takes the logits of positions ``< p0`` from the base run.

It needs a layer argument through which HF attention calls ``cache.update``: the Llama-style and
Mixtral families call it ``cache``, GPT-NeoX ``layer_past``. Other families (GPT-2, which passes
an encoder-decoder cache) run every position.
"""

from __future__ import annotations

from typing import Any

import torch

from mechscope.models.hooked import HookedModel
from mechscope.models.inputs import LayerInputs
from mechscope.sites import final_logits

Tensor = torch.Tensor
CACHE_KWARGS = ("cache", "layer_past")  # the decoder layers' cache argument, by family


def cache_kwarg(inputs: LayerInputs) -> str | None:
    """The name of the layers' cache argument, or None if position reuse is not supported."""
    kwargs = inputs.kwargs.get(0, {})
    return next((k for k in CACHE_KWARGS if k in kwargs), None)


class Recorder:
    """A cache that keeps each layer's keys and values [batch kv_head pos d_head]."""

    def __init__(self) -> None:
        self.keys: dict[int, Tensor] = {}
        self.values: dict[int, Tensor] = {}

    def update(self, key: Tensor, value: Tensor, layer_idx: int, *_: Any, **__: Any) -> tuple:
        self.keys[layer_idx], self.values[layer_idx] = key, value
        return key, value


class Prefix:
    """A cache that prepends the recorded keys and values of positions ``< p0``, tiled to rows."""

    def __init__(self, recorded: Recorder, p0: int, rows: int) -> None:
        self.recorded, self.p0, self.rows = recorded, p0, rows

    def _tile(self, t: Tensor) -> Tensor:
        t = t[:, :, : self.p0]
        return t.repeat(self.rows // t.shape[0], 1, 1, 1)

    def update(self, key: Tensor, value: Tensor, layer_idx: int, *_: Any, **__: Any) -> tuple:
        k = torch.cat([self._tile(self.recorded.keys[layer_idx]), key], dim=-2)
        v = torch.cat([self._tile(self.recorded.values[layer_idx]), value], dim=-2)
        return k, v


def _cut(name: str, value: Any, p0: int, pos: int, device: torch.device) -> Any:
    """A layer argument restricted to query positions ``p0..pos-1``."""
    if p0 == 0:
        return value
    if name == "position_embeddings" and value is not None:
        return tuple(t[..., p0:, :] for t in value)
    if name in ("position_ids", "cache_position") and isinstance(value, Tensor):
        return value[..., p0:]
    if name == "attention_mask":
        if value is None:  # causal without padding: make the offset explicit
            return torch.ones(pos - p0, pos, dtype=torch.bool, device=device).tril(p0)[None, None]
        return value[..., p0:, :]
    return value


def suffix_resid(
    model: HookedModel, resid: Tensor, start: int, inputs: LayerInputs, cache: Any, p0: int
) -> Tensor:
    """The residual after the last layer [rows pos-p0 d_model], from positions ``p0..`` at ``start``.

    ``cache=None`` (only with ``p0 == 0``) calls the layers with their recorded arguments.
    """
    name = cache_kwarg(inputs)
    assert cache is None and p0 == 0 or name is not None
    pos = p0 + resid.shape[1]
    layers = model.hf.get_submodule(model.family.layers)
    h = resid
    for i in range(start, model.dims.n_layers):
        args, kwargs = inputs.call(i, resid.shape[0])
        if cache is not None:
            kwargs = {k: _cut(k, v, p0, pos, resid.device) for k, v in kwargs.items()}
            kwargs[name] = cache
        out = layers[i](h, *args, **kwargs)
        h = out[0] if isinstance(out, tuple) else out
    return h


def unembed(model: HookedModel, h: Tensor) -> Tensor:
    """Logits of a final residual stream: the model's final norm, unembedding and logit head."""
    return final_logits(model, h)


def record(model: HookedModel, resid: Tensor, inputs: LayerInputs) -> Recorder:
    """Step 1: every layer's keys and values in the run whose layer-0 residual is ``resid``."""
    recorder = Recorder()
    suffix_resid(model, resid, 0, inputs, recorder, 0)
    return recorder
