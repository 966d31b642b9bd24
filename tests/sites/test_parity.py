"""Parity: every family, tiny random config built in code, hooked == bare HF."""

from __future__ import annotations

import pytest
import torch

from mechscope import HookedModel
from mechscope.models.tiny import CONFIGS, VOCAB, tiny_model

KINDS = list(CONFIGS)


def tokens(batch: int = 2, pos: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, pos), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", KINDS)
def test_no_hooks_logits_equal_bare_hf(kind: str) -> None:
    hf = tiny_model(kind)
    x = tokens()
    with torch.no_grad():
        bare = hf(x).logits
        model = HookedModel(hf)
        assert torch.equal(model(x), bare)


@pytest.mark.parametrize("kind", KINDS)
def test_reading_every_site_does_not_change_logits(kind: str) -> None:
    hf = tiny_model(kind)
    x = tokens()
    with torch.no_grad():
        bare = hf(x).logits
        logits, cache = HookedModel(hf).run_with_cache(x)
    # Reading scores/pattern switches those layers to eager attention: same maths, other kernel.
    assert (logits - bare).abs().max() <= 1e-5
    assert set(cache) == set(HookedModel(hf).sites)


@pytest.mark.parametrize("kind", KINDS)
def test_eager_attention_matches_sdpa(kind: str) -> None:
    hf = tiny_model(kind)
    x = tokens()
    with torch.no_grad():
        bare = hf(x).logits
        assert (HookedModel(hf, attn="eager")(x) - bare).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_site_shapes_match_table(kind: str) -> None:
    model = HookedModel(tiny_model(kind))
    x = tokens(batch=3, pos=7)
    with torch.no_grad():
        _, cache = model.run_with_cache(x)
    for name, site in model.sites.items():
        want = [3 if a == "batch" else a for a in site.shape(model.dims)]
        want = [7 if a in ("pos", "query_pos", "key_pos") else a for a in want]
        got = list(cache[name].shape)
        if name == "hook_pos_embed":  # position embeddings broadcast over the batch
            want[0] = got[0]
        assert got == want, name
