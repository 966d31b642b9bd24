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

The suffix runs are :meth:`HookedModel.run_from` with ``kv_cache`` (the one layer-suffix runner;
:meth:`LayerInputs.call` cuts the arguments). It needs a layer argument through which HF attention
calls ``cache.update`` (:attr:`LayerInputs.cache_kwarg`): the Llama-style and Mixtral families call
it ``cache``, GPT-NeoX ``layer_past``. Other families (GPT-2, which passes an encoder-decoder
cache) run every position.
"""

from __future__ import annotations

from typing import Any

import torch

from mechscope.models.hooked import HookedModel
from mechscope.models.inputs import LayerInputs
from mechscope.sites import final_logits

Tensor = torch.Tensor


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


def unembed(model: HookedModel, h: Tensor) -> Tensor:
    """Logits of a final residual stream: the model's final norm, unembedding and logit head."""
    return final_logits(model, h)


def record(model: HookedModel, resid: Tensor, inputs: LayerInputs) -> Recorder:
    """Step 1: every layer's keys and values in the run whose layer-0 residual is ``resid``."""
    recorder = Recorder()
    model.run_from(resid, 0, inputs, kv_cache=recorder, logits=False)
    return recorder
