"""loss_grads folds each weight's gradient into its sums during backward: the same sums as one
``autograd.grad`` per batch, and no gradient is left on the parameters."""

from __future__ import annotations

import torch
from compress_helpers import GS, tiny_llama

from mechscope.compress.calib import lm_loss, loss_grads
from mechscope.compress.groups import linear_weights


def test_loss_grads_equal_per_batch_autograd(calib: list[torch.Tensor]) -> None:
    model = tiny_llama()
    layout = linear_weights(model, GS)
    params = {w.name: model.hf.get_parameter(w.name) for w in layout.weights}
    fisher_ref = {k: torch.zeros_like(p) for k, p in params.items()}
    mean_ref = {k: torch.zeros_like(p) for k, p in params.items()}
    with torch.enable_grad():
        for tokens in calib:
            for k, g in zip(
                params, torch.autograd.grad(lm_loss(model, tokens), list(params.values()))
            ):
                fisher_ref[k] += g.square()
                mean_ref[k] += g / len(calib)
    fisher, mean = loss_grads(model, layout, calib)
    for k in params:
        torch.testing.assert_close(fisher[k], fisher_ref[k], rtol=1e-5, atol=1e-12)
        torch.testing.assert_close(mean[k], mean_ref[k], rtol=1e-5, atol=1e-12)
    assert len(calib) > 1 and all(p.grad is None for p in model.hf.parameters())
