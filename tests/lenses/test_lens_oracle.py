"""Oracle: the logit lens gives TransformerLens's numbers on SmolLM2-135M.

TransformerLens's own logit lens is ``cache.accumulated_resid(apply_ln=True)`` (every layer's
residual through ``ln_final`` with its statistics recomputed per layer) followed by
``unembed``, on its ``TransformerBridge`` booted on a copy of the same HF model. The bridge
computes attention eagerly, so it is compared with a mechscope model made with ``attn="eager"``
(as in tests/oracle/test_transformerlens.py).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

import mechscope
from mechscope.lenses import logit_lens

pytestmark = pytest.mark.slow

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
TOL = 1e-4


@pytest.fixture(scope="module")
def eager(smollm2_hf_copy: tuple[Any, Any]) -> mechscope.HookedModel:
    hf, tokenizer = smollm2_hf_copy
    return mechscope.HookedModel(copy.deepcopy(hf), tokenizer, attn="eager")


@pytest.fixture(scope="module")
def oracle_logits(smollm2_hf_copy: tuple[Any, Any], ioi_prompt: str) -> torch.Tensor:
    """TransformerLens's logit lens: [1 + n_layers pos d_vocab], row 0 the embedding."""
    from transformer_lens.model_bridge import TransformerBridge

    hf, tokenizer = smollm2_hf_copy
    bridge = TransformerBridge.boot_transformers(
        HUB_ID, hf_model=copy.deepcopy(hf), tokenizer=tokenizer
    )
    tokens = tokenizer(ioi_prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        _, cache = bridge.run_with_cache(tokens)
        stack = cache.accumulated_resid(apply_ln=True)  # [1 + n_layers batch pos d_model]
        return bridge.unembed(stack[:, 0]).float()


def test_logit_lens_matches_transformer_lens(
    eager: mechscope.HookedModel, oracle_logits: torch.Tensor, ioi_prompt: str
) -> None:
    oracle_probs = oracle_logits.softmax(-1)
    target = eager.tokenizer(" Mary", add_special_tokens=False)["input_ids"][0]
    n_layers = eager.dims.n_layers
    assert oracle_probs.shape[0] == n_layers + 1
    post = logit_lens(eager, ioi_prompt, target=target, top_k=5)
    pre = logit_lens(eager, ioi_prompt, target=target, top_k=5, site="resid_pre")
    pairs = (
        (post, oracle_probs[1:], oracle_logits[1:]),
        (pre, oracle_probs[:-1], oracle_logits[:-1]),
    )
    for ours, theirs, their_logits in pairs:
        top = theirs.topk(5, dim=-1)
        np.testing.assert_allclose(ours.top_probs, top.values.numpy(), atol=TOL, rtol=0)
        np.testing.assert_allclose(ours.target_prob, theirs[..., target].numpy(), atol=TOL)
        # rank from logits: far down the list, float32 probabilities tie where logits do not
        rank = (their_logits > their_logits[..., target, None]).sum(-1).numpy()
        print(
            np.abs(ours.target_rank - rank).max(),
            np.abs(ours.target_rank - rank).mean(),
            (ours.target_rank != rank).mean(),
        )
        bad = ours.target_rank != rank
        print(list(zip(ours.target_rank[bad][:20], rank[bad][:20])))
        np.testing.assert_array_equal(ours.target_rank, rank)
        # top-1 tokens agree wherever the oracle's top two are not a near tie
        clear = (top.values[..., 0] - top.values[..., 1]).numpy() > 10 * TOL
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(
            ours.top_ids[..., 0][clear], top.indices[..., 0].numpy()[clear]
        )
    # the final layer's lens is the model's output distribution: KL 0
    assert np.abs(post.kl[-1]).max() < 1e-5
