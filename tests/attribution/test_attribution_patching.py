"""Attribution patching: the exact first-order term of every exact patching sweep.

- its gradients equal ``torch.autograd.grad`` through an explicit forward in which the site is a
  leaf tensor (every sweep, three families);
- its estimate of one patch equals the derivative of the patched metric along the patch direction,
  by central finite differences in float64;
- it is linear in the patched difference, so per-head estimates sum to per-layer ones exactly;
- it has the axes, shapes and unpatched metrics of :func:`mechscope.patching.patch`;
- approximation vs intervention on SmolLM2 IOI: Spearman correlation with exact patching.
"""

from __future__ import annotations

import time

import pytest
import torch
from scipy.stats import spearmanr

from mechscope import HookedModel
from mechscope.attribution import SPECS, attribution_patch, attribution_patch_sweeps
from mechscope.errors import MechscopeError
from mechscope.models.tiny import VOCAB, tiny_model
from mechscope.patching import SWEEPS, patch

B, P = 2, 5
NEURON_LAYER = 1


def pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, VOCAB, (B, P), generator=g)
    corrupt = clean.clone()
    corrupt[:, 1] = (clean[:, 1] + 7) % VOCAB
    corrupt[1, 3] = (clean[1, 3] + 3) % VOCAB
    return clean, corrupt


def metric(logits: torch.Tensor) -> torch.Tensor:
    last = logits[:, -1]
    rows = torch.arange(last.shape[0])
    return last[rows, rows + 1] - last[rows, 2 * rows + 3]


def sweeps_of(model: HookedModel) -> list[str]:
    out = [s for s in SWEEPS if not (s == "resid_mid" and model.dims.parallel)]
    return [s for s in out if not (s == "neuron" and model.family.moe)]


def run_all(model: HookedModel, direction: str = "denoise") -> dict:
    clean, corrupt = pair()
    sweeps = sweeps_of(model)
    layer = NEURON_LAYER if "neuron" in sweeps else None
    return attribution_patch_sweeps(
        model, clean, corrupt, metric, sweeps, direction=direction, layer=layer
    )


def autograd_estimate(
    model: HookedModel, sweep: str, layer: int, direction: str, tokens=None, fn=metric
) -> torch.Tensor:
    """Mean estimated change [*axes without layer] from a leaf at one site, by autograd.grad."""
    clean, corrupt = pair() if tokens is None else tokens
    base, source = (corrupt, clean) if direction == "denoise" else (clean, corrupt)
    name = SPECS[sweep].site.format(layer)
    _, cache = model.run_with_cache(source, name)
    leaf: list[torch.Tensor] = []

    def make_leaf(act: torch.Tensor, _hook: object) -> torch.Tensor:
        leaf.append(act.detach().clone().requires_grad_(True))
        return leaf[0]

    logits = model.run_with_hooks(base, fwd_hooks=[(name, make_leaf)])
    (grad,) = torch.autograd.grad(fn(logits).sum(), leaf)
    delta = (cache[name] - leaf[0].detach()) * grad
    return torch.einsum(SPECS[sweep].reduce, delta).mean(-1)


@pytest.mark.parametrize(
    ("kind", "direction"), [("gpt2", "denoise"), ("llama", "noise"), ("gpt_neox", "denoise")]
)
def test_gradients_equal_autograd_through_explicit_forward(kind: str, direction: str) -> None:
    model = HookedModel(tiny_model(kind))
    results = run_all(model, direction)
    for sweep, r in results.items():
        base = r.corrupt if direction == "denoise" else r.clean
        estimate = r.values - base
        layers = [NEURON_LAYER] if sweep == "neuron" else range(model.dims.n_layers)
        for i, layer in enumerate(layers):
            got = estimate if sweep == "neuron" else estimate[i]
            want = autograd_estimate(model, sweep, layer, direction)
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4, msg=f"{sweep} {layer}")


def patched_metric(model, base, source, name, index, eps: float) -> float:
    """Mean metric with ``base_act[index] += eps * (source_act - base_act)[index]``."""
    _, src = model.run_with_cache(source, name)

    def hook(act: torch.Tensor, _hook: object) -> torch.Tensor:
        act = act.clone()
        act[index] = act[index] + eps * (src[name][index] - act[index])
        return act

    with torch.no_grad():
        return float(metric(model.run_with_hooks(base, fwd_hooks=[(name, hook)])).mean())


CASES = [  # sweep, index into the sweep's values, the slice of the site it patches
    ("resid_pre", (1, 1), lambda i: (slice(None), i[1])),
    ("attn_out", (0, 3), lambda i: (slice(None), i[1])),
    ("attn_head", (1, 2), lambda i: (slice(None), slice(None), i[1])),
    ("attn_head_pos", (2, 4, 1), lambda i: (slice(None), i[1], i[2])),
    ("k", (1, 1), lambda i: (slice(None), slice(None), i[1])),
    ("pattern", (2, 0), lambda i: (slice(None), i[1])),
    ("neuron", (7,), lambda i: (slice(None), slice(None), i[0])),
]


# LayerNorm families only: HF's RMSNorm computes in float32 even in a float64 model, whose
# rounding noise would swamp a finite difference.
@pytest.mark.parametrize("kind", ["gpt2", "gpt_neox"])
def test_estimate_is_the_directional_derivative(kind: str) -> None:
    model = HookedModel(tiny_model(kind, dtype=torch.float64))
    clean, corrupt = pair()
    eps = 1e-4
    for sweep, index, site_index in CASES:
        layer = NEURON_LAYER if sweep == "neuron" else index[0]
        # one sweep at a time: a pattern hook makes attention eager (softmax in float32)
        r = attribution_patch(
            model, clean, corrupt, metric, sweep, layer=layer if sweep == "neuron" else None
        )
        name = SPECS[sweep].site.format(layer)
        up = patched_metric(model, corrupt, clean, name, site_index(index), eps)
        down = patched_metric(model, corrupt, clean, name, site_index(index), -eps)
        derivative = (up - down) / (2 * eps)
        estimate = float(r.values[index]) - r.corrupt
        assert abs(derivative) > 1e-8, sweep  # a patch that matters
        rel = 1e-4 if sweep == "pattern" else 1e-6
        assert estimate == pytest.approx(derivative, rel=rel, abs=1e-12), sweep


def test_linear_in_the_patched_difference() -> None:
    model = HookedModel(tiny_model("llama"))
    r = run_all(model)
    n = model.dims.n_layers
    # z -> attn_out is linear and the output bias cancels in the difference
    by_head = r["attn_head"].values - r["attn_head"].corrupt
    by_out = r["attn_out"].values - r["attn_out"].corrupt
    head_pos = r["attn_head_pos"].values - r["attn_head_pos"].corrupt
    torch.testing.assert_close(head_pos.sum(1), by_head, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(by_head.sum(-1), by_out.sum(-1), atol=1e-6, rtol=1e-5)
    pre = r["resid_pre"].values
    torch.testing.assert_close(r["resid_post"].values[: n - 1], pre[1:], atol=1e-6, rtol=1e-5)


def test_same_axes_shapes_and_metrics_as_exact_patching() -> None:
    model = HookedModel(tiny_model("llama"))  # grouped-query attention: k, v have 2 heads
    clean, corrupt = pair()
    results = run_all(model)
    for sweep in sweeps_of(model):
        layer = NEURON_LAYER if sweep == "neuron" else None
        exact = patch(model, clean, corrupt, metric, sweep, layer=layer)
        r = results[sweep]
        assert (r.sweep, r.axes, r.direction) == (exact.sweep, exact.axes, exact.direction)
        assert r.values.shape == exact.values.shape, sweep
        assert r.method == "attribution_patching"
        assert r.clean == pytest.approx(exact.clean, abs=1e-5)
        assert r.corrupt == pytest.approx(exact.corrupt, abs=1e-5)
        single = attribution_patch(model, clean, corrupt, metric, sweep, layer=layer)
        torch.testing.assert_close(single.values, r.values)


def test_errors() -> None:
    model = HookedModel(tiny_model("gpt_neox"))  # parallel blocks: no resid_mid
    clean, corrupt = pair()
    with pytest.raises(MechscopeError, match="no site"):
        attribution_patch(model, clean, corrupt, metric, "resid_mid")
    with pytest.raises(MechscopeError, match="unknown sweep"):
        attribution_patch(model, clean, corrupt, metric, "heads")
    with pytest.raises(MechscopeError, match="neuron sweep needs layer"):
        attribution_patch(model, clean, corrupt, metric, "neuron")
    with pytest.raises(MechscopeError, match="only to the neuron sweep"):
        attribution_patch(model, clean, corrupt, metric, "attn_head", layer=0)
    with pytest.raises(MechscopeError, match=r"\[batch\] tensor"):
        attribution_patch(model, clean, corrupt, lambda x: metric(x).mean(), "attn_head")
    with pytest.raises(MechscopeError, match="different token lengths"):
        attribution_patch(model, clean, corrupt[:, :3], metric, "attn_head")
    with torch.inference_mode(), pytest.raises(MechscopeError, match="inference_mode"):
        attribution_patch(model, clean, corrupt, metric, "attn_head")
    assert all(p.grad is None for p in model.hf.parameters())  # nothing accumulated


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(spearmanr(a.flatten().numpy(), b.flatten().numpy())[0])


# Measured on 8 IOI prompts (ABC corruption): attn_head 0.95, resid_pre 0.72; on the 4 the test
# uses (half the exact sweeps' time): attn_head 0.947, resid_pre 0.824. The residual
# stream at the second subject token (pos 9, layers 10-20) is where the first-order estimate
# fails: patching it moves the metric by +1.0, the estimate says -2.2, yet at a tenth of the patch
# exact and estimate agree within 4%: the metric is far from linear along the full patch, the
# known weak spot of attribution patching on large residual-stream patches (Nanda 2023).
MIN_SPEARMAN = {"attn_head": 0.8, "resid_pre": 0.65}


@pytest.mark.slow
@pytest.mark.parametrize("sweep", list(MIN_SPEARMAN))
def test_smollm2_ioi_agrees_with_exact_patching(smollm2: HookedModel, sweep: str) -> None:
    from mechscope.tasks import load_task, logit_diff

    batch = load_task("ioi", smollm2, n=4).tokenize(smollm2)

    def ld(logits: torch.Tensor) -> torch.Tensor:
        return logit_diff(logits, batch)

    args = (smollm2, batch.clean_tokens, batch.corrupt_tokens, ld, sweep)
    start = time.perf_counter()
    approx = attribution_patch(*args)
    mid = time.perf_counter()
    exact = patch(*args)
    end = time.perf_counter()
    rho = spearman(approx.values, exact.values)
    print(
        f"\n{sweep}: spearman {rho:.3f}, attribution {mid - start:.2f} s, exact {end - mid:.2f} s"
    )
    assert approx.clean == pytest.approx(exact.clean, abs=1e-3)
    assert approx.corrupt == pytest.approx(exact.corrupt, abs=1e-3)
    assert rho >= MIN_SPEARMAN[sweep]


@pytest.mark.slow
def test_smollm2_gradients_equal_autograd(smollm2: HookedModel) -> None:
    from mechscope.tasks import load_task, logit_diff

    batch = load_task("ioi", smollm2, n=2).tokenize(smollm2)
    tokens = (batch.clean_tokens, batch.corrupt_tokens)

    def ld(logits: torch.Tensor) -> torch.Tensor:
        return logit_diff(logits, batch)

    layers = {"resid_pre": 3, "attn_head": 17, "pattern": 10, "v": 5}
    results = attribution_patch_sweeps(smollm2, *tokens, ld, list(layers))
    for sweep, layer in layers.items():
        want = autograd_estimate(smollm2, sweep, layer, "denoise", tokens, ld)
        got = results[sweep].values[layer] - results[sweep].corrupt
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3, msg=sweep)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "gpt_neox", "mixtral"])
def test_read_pos_unembeds_one_position_and_changes_nothing(kind: str) -> None:
    model = HookedModel(tiny_model(kind))
    clean, corrupt = pair()
    last = torch.full((B,), P - 1)
    with torch.no_grad():
        full = model(clean)
        read = model(clean, read_pos=last)
    torch.testing.assert_close(read[:, -1], full[:, -1])
    assert bool(read[:, :-1].isnan().all())
    sweeps = sweeps_of(model)
    layer = NEURON_LAYER if "neuron" in sweeps else None
    want = attribution_patch_sweeps(model, clean, corrupt, metric, sweeps, layer=layer)
    got = attribution_patch_sweeps(
        model, clean, corrupt, metric, sweeps, layer=layer, read_pos=last
    )
    for sweep in sweeps:
        torch.testing.assert_close(got[sweep].values, want[sweep].values, msg=sweep)
    with pytest.raises(MechscopeError, match="read_pos must be positions"):
        model(clean, read_pos=torch.tensor([P, 0]))
    with pytest.raises(MechscopeError, match="other than read_pos"):
        attribution_patch(model, clean, corrupt, lambda x: x[:, 0, 1], "attn_head", read_pos=last)
