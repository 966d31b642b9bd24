"""Oracle: the activations a feature database stores for SmolLM2's MLP neurons equal
TransformerLens's ``blocks.L.mlp.hook_post`` on the same windows (a TransformerBridge booted on
its own copy of the model, offline)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.slow

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
LAYER = 2


def test_stored_examples_equal_transformerlens(smollm2, smollm2_hf_copy: tuple[Any, Any], tmp_path):
    from transformer_lens.model_bridge import TransformerBridge

    from mechscope.features import open_db
    from mechscope.features.build import BuildConfig, build_features

    cfg = BuildConfig(model="smollm2-135m", sources=(f"mlp:{LAYER}",), n_tokens=96, seq_len=16,
                      batch_size=6, k=3, quantiles=2, per_quantile=1, negatives=1)  # fmt: skip
    build_features(smollm2, cfg, str(tmp_path / "f.db"))
    hf, tokenizer = smollm2_hf_copy
    bridge = TransformerBridge.boot_transformers(HUB_ID, hf_model=copy.deepcopy(hf), tokenizer=tokenizer)  # fmt: skip
    hook = f"blocks.{LAYER}.mlp.hook_post"
    with open_db(str(tmp_path / "f.db"), readonly=True) as db:
        maxima = [db.feature(f"mlp:{LAYER}", i)["max"] for i in range(1536)]
        strongest = sorted(range(1536), key=lambda i: -maxima[i])[:3]
        examples = [ex for i in strongest for ex in db.examples(f"mlp:{LAYER}", i, "top")]
        neurons = [i for i in strongest for _ in db.examples(f"mlp:{LAYER}", i, "top")]
    assert len(examples) == 9
    for neuron, ex in zip(neurons, examples, strict=True):
        tokens = torch.tensor([ex.token_ids])
        with torch.no_grad():
            _, cache = bridge.run_with_cache(tokens, names_filter=lambda name: name == hook)
        theirs = cache[hook][0, :, neuron].float()
        torch.testing.assert_close(torch.tensor(ex.values), theirs, atol=1e-4, rtol=1e-4)
        assert ex.value == pytest.approx(float(theirs[1:].max()), abs=1e-4)
        assert ex.position == int(theirs[1:].argmax()) + 1
