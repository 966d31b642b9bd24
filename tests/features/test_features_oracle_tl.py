"""Oracle: the activations a feature database stores for SmolLM2's MLP neurons and heads equal
TransformerLens's ``blocks.L.mlp.hook_post`` and ``blocks.L.attn.hook_z`` norms on the same
windows, and the heads' write directions agree with its ``W_O`` (a TransformerBridge booted on its
own copy of the model, offline)."""

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


def test_head_source_equals_transformerlens(smollm2, smollm2_hf_copy: tuple[Any, Any], tmp_path):
    """``attn:L`` on SmolLM2 against TransformerLens: every stored head activation is the norm of
    the bridge's ``hook_z`` for that head, and the neighbours' cosines equal those of the write
    directions rebuilt from the bridge's ``hook_z`` at the top examples' peaks and its ``W_O``."""
    from transformer_lens.model_bridge import TransformerBridge

    from mechscope.features import open_db
    from mechscope.features.build import BuildConfig, build_features

    cfg = BuildConfig(model="smollm2-135m", sources=(f"attn:{LAYER}",), n_tokens=96, seq_len=16,
                      batch_size=6, k=3, quantiles=2, per_quantile=1, negatives=1)  # fmt: skip
    build_features(smollm2, cfg, str(tmp_path / "h.db"))
    hf, tokenizer = smollm2_hf_copy
    bridge = TransformerBridge.boot_transformers(HUB_ID, hf_model=copy.deepcopy(hf), tokenizer=tokenizer)  # fmt: skip
    hook, source = f"blocks.{LAYER}.attn.hook_z", f"attn:{LAYER}"
    w_o = bridge.blocks[LAYER].attn.W_O.detach().float()  # [head d_head d_model]
    writes, stored = [], []
    with open_db(str(tmp_path / "h.db"), readonly=True) as db:
        n_heads = db.source(source)["n_features"]
        assert n_heads == w_o.shape[0] == 9
        for h in range(n_heads):
            examples = db.examples(source, h, "top")
            assert len(examples) == 3
            z_sum, norm_sum = torch.zeros(w_o.shape[1]), 0.0
            for ex in examples:
                with torch.no_grad():
                    _, cache = bridge.run_with_cache(torch.tensor([ex.token_ids]), names_filter=lambda n: n == hook)  # fmt: skip
                z = cache[hook][0, :, h].float()  # [pos d_head]
                torch.testing.assert_close(torch.tensor(ex.values), z.norm(dim=-1), atol=1e-4, rtol=1e-4)  # fmt: skip
                assert ex.value == pytest.approx(float(z.norm(dim=-1)[ex.position]), abs=1e-4)
                z_sum += z[ex.position]
                norm_sum += float(z[ex.position].norm())
            writes.append(z_sum @ w_o[h] / norm_sum)
            stored.append(db.feature(source, h)["neighbours"])
    writes = torch.stack(writes)
    cos = torch.nn.functional.cosine_similarity(writes[:, None], writes[None], dim=-1)
    for h, near in enumerate(stored):
        assert [n["index"] for n in near] and h not in [n["index"] for n in near]
        for n in near:
            assert n["cosine"] == pytest.approx(float(cos[h, n["index"]]), abs=1e-4)
        theirs = sorted((j for j in range(len(writes)) if j != h), key=lambda j: -float(cos[h, j]))
        assert [n["index"] for n in near] == theirs[: len(near)]
