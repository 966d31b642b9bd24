"""SAE modules: config validation, units, errors, and the fast sparse path against the dense one."""

from __future__ import annotations

import pytest
import torch

from mechscope.errors import MechscopeError
from mechscope.sae import ARCHITECTURES, SAE, SAEConfig
from mechscope.sae.base import SAE as BaseSAE
from mechscope.sae.jumprelu import jumprelu, step


def make(arch: str, **kw) -> SAE:
    cfg = SAEConfig(arch=arch, d_in=8, d_sae=24, k=3, **kw)
    return SAE(cfg)


def test_registry_and_dispatch():
    assert set(ARCHITECTURES) == {"relu", "topk", "batchtopk", "jumprelu", "matryoshka"}
    for arch, cls in ARCHITECTURES.items():
        sae = make(arch)
        assert type(sae) is cls and isinstance(sae, BaseSAE)
        assert sae.W_enc.shape == (8, 24) and sae.W_dec.shape == (24, 8)
        assert sae.b_enc.shape == (24,) and sae.b_dec.shape == (8,)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"arch": "gated"}, "unknown SAE architecture 'gated'"),
        ({"arch": "topk"}, "needs k"),
        ({"arch": "topk", "k": 99}, "needs k"),
        ({"arch": "relu", "d_sae": 0}, "d_sae must be a positive integer"),
        ({"arch": "relu", "normalize_scale": -1.0}, "normalize_scale"),
        ({"arch": "relu", "dtype": "int8"}, "unknown SAE dtype"),
        ({"arch": "jumprelu", "threshold": 0.0}, "threshold must be"),
        ({"arch": "relu", "d_out": 4}, "transcoder"),
    ],
)
def test_config_errors(kw, match):
    args = {"d_in": 8, "d_sae": 24} | kw
    with pytest.raises(MechscopeError, match=match):
        SAEConfig(**args)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_input_errors(arch):
    sae = make(arch)
    with pytest.raises(
        MechscopeError, match=r"wrong SAE dimensions: activations have d=7, SAE expects d_in=8"
    ):
        sae(torch.randn(2, 7))
    x = torch.randn(2, 8)
    x[0, 0] = float("nan")
    with pytest.raises(MechscopeError, match="NaN"):
        sae.encode(x)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_model_units(arch):
    """normalize_scale is applied inside: an SAE on x*c with scale 1/c equals the SAE on x (x_hat * c)."""
    base, scaled = make(arch), make(arch, normalize_scale=0.25)
    base.eval(), scaled.eval()
    with torch.no_grad():
        base.b_dec.normal_()
        scaled.b_dec.copy_(base.b_dec)
    x = torch.randn(5, 3, 8)
    out, out_s = base(x), scaled(4 * x)
    assert out.x_hat.shape == (5, 3, 8) and out.latents.shape == (5, 3, 24)
    torch.testing.assert_close(out_s.latents, out.latents)
    torch.testing.assert_close(out_s.x_hat, 4 * out.x_hat)
    torch.testing.assert_close(scaled.decode(scaled.encode(4 * x)), out_s.x_hat)


def test_topk_and_relu_activations():
    sae = make("topk").eval()
    lat = sae.encode(torch.randn(50, 8))
    assert ((lat > 0).sum(-1) <= 3).all() and (lat >= 0).all()
    relu = make("relu")
    pre = relu.pre_activations(torch.randn(4, 8))
    torch.testing.assert_close(relu.activate(pre), pre.clamp_min(0))


def test_batchtopk_train_and_eval():
    sae = make("batchtopk")
    x = torch.randn(40, 8)
    sae.train()
    lat = sae.encode(x)
    assert int((lat > 0).sum()) <= 3 * 40
    sae.threshold.fill_(0.3)
    sae.eval()
    pre = sae.pre_activations(x)
    torch.testing.assert_close(sae.encode(x), pre * (pre > 0.3))


def test_batchtopk_per_token_phase():
    """While ``per_token`` (the first steps of training) BatchTopK chooses k per token, as TopK,
    and leaves its inference threshold alone."""
    sae = make("batchtopk").train()
    sae.per_token = True
    x = torch.randn(40, 8)
    out = sae(x)
    assert torch.equal(out.sparse.rows, torch.arange(40).repeat_interleave(3))
    sae.after_step(out)
    assert float(sae.threshold) == 0.0
    sae.per_token = False
    out = sae(x)
    sae.after_step(out)
    kept = out.sparse.values.detach()[out.sparse.values > 0]
    assert float(sae.threshold) == pytest.approx(float(kept.min()))  # bias-corrected first step


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka"])
@pytest.mark.parametrize("transcoder", [False, True])
def test_sparse_training_path_matches_dense(arch, transcoder):
    """The fast path (custom gather + embedding bag) gives the dense loss and gradients exactly;
    for Matryoshka the loss adds every inner prefix's own squared error."""
    torch.manual_seed(0)
    extra = {"out_hook_name": "blocks.0.hook_mlp_out", "d_out": 6} if transcoder else {}
    if arch == "matryoshka":
        extra["matryoshka_widths"] = (8, 32)
    cfg = SAEConfig(
        arch=arch, d_in=16, d_sae=64, k=3, normalize_scale=2.0, dtype="float64", **extra
    )
    sae = SAE(cfg).train()
    with torch.no_grad():
        sae.b_dec.normal_(), sae.b_enc.normal_(std=0.1), sae.W_dec.mul_(1.3)
    x = torch.randn(32, 16, dtype=torch.float64)
    target = torch.randn(32, 6, dtype=torch.float64) if transcoder else None
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::3] = True
    sae.aux_coefficient = 0.5
    out = sae(x)
    assert out.sparse is not None
    fast = sae.loss(x, out, target=target, dead=dead)
    sae.zero_grad()
    fast["loss"].backward()
    fast_grads = {n: p.grad.clone() for n, p in sae.named_parameters()}

    pre = BaseSAE.pre_activations(sae, x)  # dense reference, plain autograd
    x_hat = sae.decode(sae.activate(pre))
    torch.testing.assert_close(x_hat, out.x_hat)
    goal = sae.scale_in(x if target is None else target)
    resid = goal - sae.scale_in(x_hat)
    mse = resid.pow(2).sum(-1).mean()
    k_aux = min(16 // 2, int(dead.sum()))
    idx = pre.detach().masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1).indices
    aux_lat = torch.zeros_like(pre).scatter(-1, idx, pre.gather(-1, idx).relu())
    r = resid.detach()
    aux = (aux_lat @ sae.W_dec - r).pow(2).sum(-1).mean() / r.pow(2).sum(-1).mean()
    total = mse + 0.5 * aux * min(int(dead.sum()) / (16 // 2), 1.0)
    if arch == "matryoshka":
        lat = sae.activate(pre)
        for m in (8, 32):
            inner = goal - (lat[:, :m] @ sae.W_dec[:m] + sae.b_dec)
            total = total + inner.pow(2).sum(-1).mean()
            assert f"inner_mse_{m}" in fast
    torch.testing.assert_close(fast["loss"], total)
    sae.zero_grad()
    total.backward()
    for name, p in sae.named_parameters():
        torch.testing.assert_close(fast_grads[name], p.grad, msg=name)


def test_jumprelu_straight_through_gradients():
    """Threshold gradients follow the rectangle-kernel pseudo-derivatives of the paper."""
    pre = torch.tensor([[0.10, 0.48, 0.52, 0.90]], dtype=torch.float64, requires_grad=True)
    theta = torch.full((4,), 0.5, dtype=torch.float64, requires_grad=True)
    eps = 0.1
    out = jumprelu(pre, theta, eps)
    assert out.tolist() == [[0.0, 0.0, 0.52, 0.90]]
    out.sum().backward()
    # d/dθ = -(θ/ε) K((z-θ)/ε): nonzero only for |z-θ| < ε/2
    assert theta.grad.tolist() == pytest.approx([0.0, -5.0, -5.0, 0.0])
    assert pre.grad.tolist() == [[0.0, 0.0, 1.0, 1.0]]
    theta.grad = None
    step(pre, theta, eps).sum().backward()
    assert theta.grad.tolist() == pytest.approx([0.0, -10.0, -10.0, 0.0])


def test_unit_norm_helpers():
    sae = make("topk")
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.W_dec.grad = torch.randn_like(sae.W_dec)
    sae.remove_parallel_gradient()
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() < 1e-4
    sae.normalise_decoder()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(24))
