"""Per-prompt patching values and their bootstrap intervals.

The per-prompt values must be what patching each prompt alone gives (an independent run per
prompt), and :meth:`PatchResult.ci` must be :func:`mechscope.stats.bootstrap_ci` of them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechscope import HookedModel, MechscopeError
from mechscope.models.tiny import VOCAB, tiny_model
from mechscope.patching import patch
from mechscope.stats import bootstrap_ci


def logit_diff(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1, 5] - logits[:, -1, 7]


@pytest.fixture(scope="module")
def setup() -> tuple[HookedModel, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    clean = torch.randint(0, VOCAB, (5, 6), generator=g)
    corrupt = clean.clone()
    corrupt[:, 2] = (clean[:, 2] + 7) % VOCAB
    return HookedModel(tiny_model("llama")), clean, corrupt


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_per_prompt_values_are_each_prompt_alone(setup: tuple, direction: str) -> None:
    model, clean, corrupt = setup
    r = patch(model, clean, corrupt, logit_diff, "attn_head", direction=direction)
    assert r.per_prompt is not None and r.per_prompt.shape == (*r.values.shape, 5)
    torch.testing.assert_close(r.per_prompt.mean(-1), r.values)
    for i in range(clean.shape[0]):
        alone = patch(model, clean[i : i + 1], corrupt[i : i + 1], logit_diff, "attn_head",
                      direction=direction)  # fmt: skip
        torch.testing.assert_close(r.per_prompt[..., i], alone.values, atol=1e-5, rtol=0)
        assert r.prompt_clean[i].item() == pytest.approx(alone.clean, abs=1e-5)
        assert r.prompt_corrupt[i].item() == pytest.approx(alone.corrupt, abs=1e-5)


def test_ci_is_the_bootstrap_of_the_prompts(setup: tuple) -> None:
    model, clean, corrupt = setup
    r = patch(model, clean, corrupt, logit_diff, "resid_pre")
    lo, hi = r.ci(n_boot=300, seed=4)
    want_lo, want_hi = bootstrap_ci(r.per_prompt.permute(2, 0, 1), n_boot=300, seed=4)
    np.testing.assert_allclose(lo.numpy(), want_lo, atol=1e-5)
    np.testing.assert_allclose(hi.numpy(), want_hi, atol=1e-5)
    assert bool((lo <= r.values + 1e-5).all() and (r.values <= hi + 1e-5).all())
    assert bool((hi - lo > 1e-4).any()), "prompts differ, so some interval has width"
    # normalised: the clean and corrupted means move with the resampled prompts
    nlo, nhi = r.ci(n_boot=300, seed=4, normalized=True)
    idx = np.random.default_rng(4).integers(0, 5, size=(300, 5))
    pp, c, k = r.per_prompt.double().numpy(), r.prompt_clean.double(), r.prompt_corrupt.double()
    boots = np.stack(
        [(pp[..., i].mean(-1) - k[i].mean().item()) / (c[i] - k[i]).mean().item() for i in idx]
    )
    np.testing.assert_allclose(nlo.numpy(), np.quantile(boots, 0.025, axis=0), atol=1e-4)
    np.testing.assert_allclose(nhi.numpy(), np.quantile(boots, 0.975, axis=0), atol=1e-4)


def test_ci_of_a_layer_subset_and_without_prompts(setup: tuple) -> None:
    model, clean, corrupt = setup
    r = patch(model, clean, corrupt, logit_diff, "resid_pre", layers=[1])
    lo, hi = r.ci(n_boot=100)
    assert lo[0].isnan().all() and not lo[1].isnan().any() and not hi[1].isnan().any()
    with pytest.raises(MechscopeError, match="at least 2 prompts"):
        patch(model, clean[:1], corrupt[:1], logit_diff, "resid_pre").ci()


@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_pvalues_are_the_exact_sign_flip_test(setup: tuple, direction: str) -> None:
    """5 prompts: all 32 sign patterns of each cell's per-prompt (patched - unpatched) difference
    are enumerated by hand; p is the share whose |mean| reaches the observed one."""
    model, clean, corrupt = setup
    r = patch(model, clean, corrupt, logit_diff, "attn_head", direction=direction)
    p = r.pvalues()
    assert p.shape == r.values.shape
    base = (r.prompt_corrupt if direction == "denoise" else r.prompt_clean).double()
    diff = r.per_prompt.double() - base  # [layer head prompt]
    signs = torch.tensor(
        [[1.0 - 2.0 * ((m >> i) & 1) for i in range(5)] for m in range(32)], dtype=torch.float64
    )
    null = (diff @ signs.T).abs() / 5  # [layer head pattern]
    observed = diff.mean(-1).abs()
    want = (null >= observed[..., None] * (1 - 1e-9) - 1e-12).double().mean(-1)
    torch.testing.assert_close(p.double(), want, atol=1e-6, rtol=0)
    assert float(p.min()) >= 1 / 32 - 1e-9  # the observed pattern is always one of them
    # a slice that changes nothing for any prompt (patching a run into itself) has p = 1
    same = patch(model, clean, clean, logit_diff, "attn_head", direction=direction)
    assert bool((same.pvalues() == 1).all())


def test_pvalues_need_per_prompt_values(setup: tuple) -> None:
    from dataclasses import replace

    model, clean, corrupt = setup
    r = replace(patch(model, clean, corrupt, logit_diff, "resid_pre"), per_prompt=None)
    with pytest.raises(MechscopeError, match="no interval or p-value"):
        r.pvalues()
