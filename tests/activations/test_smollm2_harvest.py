"""A few thousand SmolLM2 tokens at layer 6: the store equals run_with_cache on the same windows."""

from __future__ import annotations

import pytest
import torch

from mechscope.activations import harvest
from mechscope.corpus import load_corpus, windows

SITE = "blocks.6.hook_resid_post"


@pytest.mark.slow
def test_smollm2_layer6_store_matches_run_with_cache(smollm2, tmp_path) -> None:
    corpus = load_corpus(None)
    store = harvest(
        smollm2, SITE, corpus, 2048, tmp_path, seq_len=64, shard_tokens=1024, progress=False
    )
    m = store.manifest
    # 63 stored positions per window (the first left out): 16 windows, 1008 rows per shard
    assert m.complete and m.d_in == 576 and [s.n_tokens for s in m.shards] == [1008, 1008, 32]
    assert m.config["model"] == "smollm2-135m"
    ws = torch.stack(list(windows(corpus, smollm2.tokenizer, seq_len=64, split="train"))[:33])
    _, cache = smollm2.run_with_cache(ws, names=SITE)
    want = cache[SITE][:, 1:].reshape(-1, 576)[:2048]
    # batches of 8 windows here against one batch of 32 there: equal up to float32 matmul order
    torch.testing.assert_close(store.tensor(), want, rtol=1e-4, atol=1e-4)
    x = store.tensor().double()
    assert store.norm_scale == pytest.approx(1 / x.pow(2).sum(1).mean().sqrt().item(), rel=1e-9)
