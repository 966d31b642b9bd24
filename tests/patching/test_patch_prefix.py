"""Position reuse: running positions ``p0..`` on the recorded prefix keys/values changes nothing."""

from __future__ import annotations

import pytest
import torch

from mechscope import HookedModel
from mechscope.models.tiny import CONFIGS, VOCAB, tiny_model
from mechscope.patching.prefix import Prefix, record


@pytest.mark.parametrize("kind", list(CONFIGS))
@pytest.mark.parametrize("padded", [False, True])
def test_suffix_run_reproduces_the_base_logits(kind: str, padded: bool) -> None:
    model = HookedModel(tiny_model(kind))
    tokens = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(tokens)
    if padded:
        mask[1, 5:] = 0
    n = model.dims.n_layers
    with torch.no_grad(), model.capture_inputs() as inputs:
        logits, cache = model.run_with_cache(tokens, "blocks.*.hook_resid_pre", mask)
    if kind == "gpt2":  # its layers take an encoder-decoder cache: no position reuse
        assert inputs.cache_kwarg is None
        return
    assert inputs.cache_kwarg is not None
    with torch.no_grad():
        recorded = record(model, cache["blocks.0.hook_resid_pre"], inputs)
        for start, p0 in [(0, 1), (1, 4), (n - 1, 6)]:
            resid = cache[f"blocks.{start}.hook_resid_pre"][:, p0:].repeat(3, 1, 1)
            prefix = Prefix(recorded, p0, rows=6)
            got = model.run_from(resid, start, inputs, kv_cache=prefix)
            want = logits[:, p0:].repeat(3, 1, 1)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=f"{start}, {p0}")
