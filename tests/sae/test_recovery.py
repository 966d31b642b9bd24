"""Planted ground truth: every architecture, asked for a target L0 ``k`` and nothing else, recovers
a known dictionary and ends at that L0.

Activations are sparse non-negative combinations (about ``k`` of ``n_true`` features per token,
coefficients 0.5-1.5) of random unit directions, plus noise, times a scale the SAE must undo
through ``normalize_scale`` (as `mechscope harvest` records it). Only ``k`` is given: no sparsity
coefficient, threshold or warm-up, so ReLU and JumpReLU reach ``k`` through the controller. A true
direction counts as recovered when some decoder row has cosine >= 0.9 with it; each architecture
must recover >= 90% of them and end (inference mode, fresh data) within 25% of ``k``.
"""

from __future__ import annotations

import pytest
import synthetic as syn
import torch

from mechscope.sae import ARCHITECTURES, SAE, SAEConfig, TrainConfig, fit, score_dictionary

# name -> (d_in, true features, k, input scale, d_sae)
CASES = {
    "d64-f256-k4-x3": (64, 256, 4, 3.0, 512),
    "d32-f96-k2-x0.05": (32, 96, 2, 0.05, 192),
    "d48-f128-k6-x20": (48, 128, 6, 20.0, 256),
}
STEPS = {"topk": 400, "batchtopk": 600, "matryoshka": 600, "relu": 1000, "jumprelu": 1500}
FAST = {"d32-f96-k2-x0.05"}  # the other cases are marked slow


def train(arch: str, case: str) -> tuple[SAE, float, float]:
    d, n_true, k, scale, d_sae = CASES[case]
    dic = syn.dictionary(n_true, d, seed=0)
    data = lambda n, bs, seed: syn.batches(dic, n, bs, active=k, scale=scale, seed=seed)  # noqa: E731
    norm = syn.norm_scale(next(data(1, 4096, 99)))
    sae = SAE(SAEConfig(arch=arch, d_in=d, d_sae=d_sae, k=k, normalize_scale=norm))
    cfg = TrainConfig(steps=STEPS[arch], lr=1e-2, batch_size=1024)
    result = fit(sae, data(cfg.total_steps, 1024, 1), cfg, progress=False)
    scores = score_dictionary(dic, sae.W_dec)
    with torch.no_grad():
        l0 = float((sae.encode(next(data(1, 4096, 7))) > 0).sum(-1).float().mean())
    print(
        f"{arch} {case}: recovered {scores.recovered:.1%}, mcc {scores.mcc:.3f}, "
        f"fvu {result.fvu:.3f}, L0 {l0:.2f} (target {k}), coefficient {result.coefficient}"
    )
    return sae, scores.recovered, l0


# Besides the fast case, each architecture trains on one of the two slow cases (the two cases
# alternate over architectures, so both stay covered); benchmarks/bench_sae_recovery.py runs all
# of them.
SLOW_CASE = {
    "jumprelu": "d64-f256-k4-x3",
    "relu": "d48-f128-k6-x20",
    "topk": "d64-f256-k4-x3",
    "batchtopk": "d48-f128-k6-x20",
    "matryoshka": "d64-f256-k4-x3",
}


def cases():
    assert set(SLOW_CASE) == set(ARCHITECTURES), "give every architecture a slow case"
    for case in CASES:
        for arch in sorted(ARCHITECTURES):
            if case in FAST or SLOW_CASE[arch] == case:
                marks = [] if case in FAST else [pytest.mark.slow]
                yield pytest.param(arch, case, marks=marks, id=f"{arch}-{case}")


@pytest.mark.parametrize(("arch", "case"), list(cases()))
def test_recovers_planted_dictionary_at_target_l0(arch, case):
    k = CASES[case][2]
    _, frac, l0 = train(arch, case)
    assert frac >= 0.9, f"{arch} recovered only {frac:.1%} of the true directions"
    assert abs(l0 - k) <= 0.25 * k, f"{arch} ended at L0 {l0:.2f}, asked for {k}"


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
