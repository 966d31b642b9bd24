"""RTN and GPTQ: value counts per group, error order, the GPTQ identity, bit recounts."""

from __future__ import annotations

import pytest
import torch
from compress_helpers import GS, tiny_llama

from mechscope.compress.apply import quantize_model, recount
from mechscope.compress.gptq import gptq
from mechscope.compress.groups import linear_weights
from mechscope.compress.quant import WIDTHS, distinct_per_group, effective_bits, rtn


@pytest.fixture(scope="module")
def groups() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(200, 64, generator=g) * torch.rand(200, 1, generator=g)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_rtn_holds_at_most_two_to_the_bits_values(groups: torch.Tensor, bits: int) -> None:
    q = rtn(groups, bits)
    assert int(distinct_per_group(q.values).max()) <= 2**bits
    assert int(q.codes.min()) >= 0 and int(q.codes.max()) <= 2**bits - 1
    # min-max: within one step of the grid (half from rounding, half from the rounded zero)
    span = groups.max(1).values - groups.min(1).values
    err = (q.values - groups).abs().max(1).values
    assert bool((err <= span / (2**bits - 1) * 1.01 + 1e-6).all())


def test_rtn_error_falls_with_width_and_16_is_fp16(groups: torch.Tensor) -> None:
    errs = [float((rtn(groups, b).values - groups).square().sum()) for b in WIDTHS]
    assert errs == sorted(errs, reverse=True)
    assert torch.equal(rtn(groups, 16).values, groups.half().float())


def test_mixed_widths_per_group(groups: torch.Tensor) -> None:
    bits = torch.tensor(WIDTHS).repeat(40)
    q = rtn(groups, bits)
    for b in WIDTHS:
        assert torch.equal(q.values[bits == b], rtn(groups[bits == b], b).values)


def test_effective_bits_formula() -> None:
    assert effective_bits(torch.tensor([3, 3]), 64) == 3.5
    assert effective_bits(torch.tensor([2, 16]), 64) == (2.5 + 16) / 2
    assert effective_bits(torch.tensor([4]), 8) == 8.0


def test_gptq_with_diagonal_hessian_is_rtn() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(12, 32, generator=g)
    bits = torch.tensor([[2, 3, 8, 16]]).repeat(12, 1)
    h = torch.diag(torch.rand(32, generator=g) + 0.5)
    q = gptq(w, h, bits, 8)
    ref = rtn(w.reshape(-1, 8), bits.reshape(-1))
    assert torch.allclose(q.values, ref.values, atol=1e-6)


def test_gptq_beats_rtn_on_correlated_inputs() -> None:
    g = torch.Generator().manual_seed(2)
    w = torch.randn(32, 64, generator=g)
    mix = torch.randn(64, 64, generator=g)
    x = torch.randn(512, 64, generator=g) @ mix  # correlated input columns
    h = 2 * x.T @ x / len(x)
    bits = torch.full((32, 8), 3)
    q = gptq(w, h, bits, 8)
    assert int(distinct_per_group(q.values).max()) <= 8
    r = rtn(w.reshape(-1, 8), 3).values.view_as(w)
    out_err = lambda v: float(((v.view_as(w) - w) @ x.T).square().sum())  # noqa: E731
    assert out_err(q.values) < 0.7 * out_err(r)


@pytest.mark.parametrize("quantizer", ["rtn", "gptq"])
def test_recount_from_the_weights(quantizer: str, calib: list[torch.Tensor]) -> None:
    from mechscope.compress.calib import input_stats

    model = tiny_llama()
    layout = linear_weights(model, GS)
    gen = torch.Generator().manual_seed(3)
    widths = torch.tensor(WIDTHS)[torch.randint(0, 5, (layout.n_groups,), generator=gen)]
    hess = input_stats(model, layout, calib, hessian=True)[1] if quantizer == "gptq" else None
    quantize_model(model, layout, widths, quantizer, hess)
    counted = recount(model, layout, widths)
    assert counted.violations == 0
    assert counted.effective_bits <= counted.claimed_bits == effective_bits(widths, GS)
    # a weight edited after quantization breaks its group's count
    first = layout.weights[0]
    two = (widths[: first.n_groups] == 2).nonzero()[0, 0]
    row, col = divmod(int(two), first.groups_per_row)
    with torch.no_grad():
        model.hf.get_parameter(first.name)[row, col * GS : (col + 1) * GS] += (
            torch.arange(GS) * 1e-3
        )
    assert recount(model, layout, widths).violations >= 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gptq_layerwise_error_at_most_rtn_on_a_linear(seed: int) -> None:
    """The GPTQ objective on an nn.Linear with groups of 64 and mixed widths: its output error on
    the calibration inputs (heavy-tailed, correlated, a few outlier channels) is <= RTN's."""
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(192, 48, bias=False)
    torch.nn.init.normal_(lin.weight, std=0.05, generator=g)
    x = torch.randn(1024, 192, generator=g) @ torch.randn(192, 192, generator=g) * 0.2
    x[:, :4] *= 20.0  # outlier input channels, as in LLM activations
    h = 2 * x.T.double() @ x.double() / len(x)
    bits = torch.tensor([2, 3, 4, 8])[torch.randint(0, 4, (48, 3), generator=g)]
    w = lin.weight.detach()
    q = gptq(w, h, bits, 64)
    r = rtn(w.reshape(-1, 64), bits.reshape(-1)).values.view_as(w)
    with torch.no_grad():
        ref = lin(x)
        err = lambda v: float((x @ v.view_as(w).T - ref).square().sum())  # noqa: E731
    assert err(q.values) <= err(r)
    assert (distinct_per_group(q.values) <= 2 ** bits.reshape(-1).clamp(max=16)).all()
