"""Planted ground truth: every architecture recovers a known dictionary from synthetic activations.

Activations are sparse non-negative combinations (about 4 of 256 features per token, coefficients
0.5-1.5) of 256 random unit directions in 64 dimensions, plus noise, times 3 (the SAE must undo
the scale through ``normalize_scale``). A true direction counts as recovered when some decoder
row has cosine similarity >= 0.9 with it; each architecture must recover >= 90% of them. A
transcoder must recover the dictionary's image under the linear map it learns to imitate.
"""

from __future__ import annotations

import pytest
import synthetic as syn
import torch

from mechscope.sae import SAE, SAEConfig, TrainConfig, fit

# arch -> (SAE config fields, training config fields); tuned to converge in a few hundred steps
SETTINGS = {
    "topk": ({"k": 4}, {"steps": 300}),
    "batchtopk": ({"k": 4}, {"steps": 800}),
    "relu": ({"l1_coefficient": 0.5}, {"steps": 600, "sparsity_warmup_steps": 150}),
    "jumprelu": (
        {"l0_coefficient": 0.02, "threshold": 0.1, "bandwidth": 0.05},
        {"steps": 800, "betas": (0.0, 0.999)},
    ),
}


def train(arch: str) -> tuple[SAE, float, float]:
    torch.manual_seed(0)
    dic = syn.dictionary()
    scale = syn.norm_scale(next(syn.batches(dic, 1, 4096, seed=99)))
    sae_kw, train_kw = SETTINGS[arch]
    sae = SAE(SAEConfig(arch=arch, d_in=64, d_sae=512, normalize_scale=scale, **sae_kw))
    cfg = TrainConfig(lr=1e-2, batch_size=1024, dead_window_tokens=20_000, **train_kw)
    result = fit(sae, syn.batches(dic, cfg.total_steps, 1024), cfg, progress=False)
    frac, mean_cos = syn.recovery(dic, sae.W_dec.detach())
    print(
        f"{arch}: recovered {frac:.1%}, mean max cos {mean_cos:.3f}, fvu {result.fvu:.3f}, L0 {result.l0:.2f}"
    )
    return sae, frac, mean_cos


@pytest.mark.slow  # trains four SAEs to convergence
@pytest.mark.parametrize("arch", sorted(SETTINGS))
def test_recovers_planted_dictionary(arch):
    sae, frac, mean_cos = train(arch)
    assert frac >= 0.9, (
        f"{arch} recovered only {frac:.1%} of the true directions (mean max cos {mean_cos:.3f})"
    )
    # the trained SAE is sparse at inference too (BatchTopK through its learned threshold)
    x = next(syn.batches(syn.dictionary(), 1, 512, seed=7))
    l0 = float((sae.encode(x) > 0).sum(-1).float().mean())
    assert 2 <= l0 <= 12


@pytest.mark.slow  # trains a transcoder to convergence
def test_transcoder_recovers_mapped_dictionary():
    """x_out = codes @ D @ M: decoder rows must match the rows of D @ M (the features' outputs)."""
    dic = syn.dictionary()
    g = torch.Generator().manual_seed(4)
    mix = torch.randn(64, 48, generator=g) / 8  # a linear "MLP" to a 48-wide output
    mapped = dic @ mix
    sample_in, _ = next(syn.pair_batches(dic, mix, 1, 4096, seed=99))
    cfg = SAEConfig(
        arch="topk", d_in=64, d_sae=512, d_out=48, k=4, hook_name="blocks.0.ln2.hook_normalized",
        out_hook_name="blocks.0.hook_mlp_out", normalize_scale=syn.norm_scale(sample_in),
    )  # fmt: skip
    tc = SAE(cfg)
    train_cfg = TrainConfig(steps=400, lr=1e-2, batch_size=1024, dead_window_tokens=20_000)
    result = fit(tc, syn.pair_batches(dic, mix, 400, 1024), train_cfg, progress=False)
    frac, mean_cos = syn.recovery(mapped / mapped.norm(dim=1, keepdim=True), tc.W_dec.detach())
    print(f"transcoder: recovered {frac:.1%}, mean max cos {mean_cos:.3f}, fvu {result.fvu:.3f}")
    assert frac >= 0.9
    x_in, x_out = next(syn.pair_batches(dic, mix, 1, 256, seed=11))
    fvu = (tc(x_in).x_hat - x_out).pow(2).sum() / (x_out - x_out.mean(0)).pow(2).sum()
    assert fvu < 0.3
