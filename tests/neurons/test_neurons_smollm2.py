"""SmolLM2 on a small slice of the built-in corpus: the scan equals the brute force."""

from __future__ import annotations

import pytest
import torch
from neuron_helpers import brute_topk

from mechscope.corpus import batches, load_corpus
from mechscope.corpus.builtin import find_python_docs
from mechscope.neurons import mlp_neurons, scan

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_python_docs() is None, reason="needs Debian's python3-doc"),
]


def test_smollm2_layer_scan_equals_brute_force(smollm2) -> None:
    corpus = load_corpus()
    stream = list(batches(corpus, smollm2.tokenizer, batch_size=8, seq_len=32, n_tokens=512))
    readout = mlp_neurons(smollm2, 3)
    result = scan(smollm2, readout, stream, k=3)
    tokens = torch.cat(stream)
    with torch.no_grad():
        _, cache = smollm2.run_with_cache(tokens, names=[readout.site])
    acts = cache[readout.site].float()  # [window pos d_mlp]: every neuron, all at once
    values, windows, positions = brute_topk(acts, 3)
    assert result.n_tokens == 512 and result.top.values.shape == (1536, 3)
    assert torch.allclose(result.top.values, values, atol=1e-4)
    agree = (result.top.windows == windows) & (result.top.positions == positions)
    assert agree.float().mean() > 0.999  # only float near-ties between windows may swap
    w_u = smollm2.hf.lm_head.weight.detach()
    rows = smollm2.hf.model.layers[3].mlp.down_proj.weight.detach().T  # [d_mlp d_model]
    logits = (rows * smollm2.hf.model.norm.weight.detach()) @ w_u.T
    assert torch.equal(result.effects.promote_ids[:50], logits[:50].topk(10).indices)
