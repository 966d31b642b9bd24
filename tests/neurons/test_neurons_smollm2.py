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
    # logit effects: through the final norm's Jacobian, averaged over the final residuals of the
    # first batch (positions 1 on), here by torch.func per position (another autograd route)
    with torch.no_grad():
        _, cache = smollm2.run_with_cache(stream[0], names=["blocks.29.hook_resid_post"])
    resid = cache["blocks.29.hook_resid_post"][:, 1:].reshape(-1, 576).float()
    norm = smollm2.hf.model.norm
    jac = torch.func.vmap(torch.func.jacrev(norm))(resid[:, None])[:, 0, :, 0].mean(0)
    w_u = smollm2.hf.lm_head.weight.detach()
    rows = smollm2.hf.model.layers[3].mlp.down_proj.weight.detach().T  # [d_mlp d_model]
    logits = (rows[:50] @ jac.T) @ w_u.T
    top = logits.topk(10)
    assert (result.effects.promote_ids[:50] == top.indices).float().mean() > 0.99
    torch.testing.assert_close(result.effects.promote_values[:50], top.values, rtol=1e-3, atol=1e-5)
