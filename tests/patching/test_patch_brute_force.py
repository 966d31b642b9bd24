"""The batched engine gives the numbers of one full forward per patch, on every family.

The oracle here is the definition itself: for each index, ``run_with_hooks`` on the base input
with one hook that copies the slice from a cache of the source run (TransformerLens's
``generic_activation_patch`` loop, written out with mechscope's own hooks). Sweeps of more than
``MAX_CELLS`` cells are checked on an evenly spaced subset of them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
import torch

from mechscope import HookedModel
from mechscope.errors import MechscopeError
from mechscope.models.tiny import CONFIGS, VOCAB, tiny_model
from mechscope.patching import SWEEPS, patch

KINDS = list(CONFIGS)
B, P = 2, 5
MAX_CELLS = 24  # larger sweeps are checked on every k-th cell, to keep the loop short
TOL = 1e-5


def pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, VOCAB, (B, P), generator=g)
    corrupt = clean.clone()
    corrupt[:, 2] = (clean[:, 2] + 7) % VOCAB  # differ at one position, as IOI pairs do
    corrupt[1, 3] = (clean[1, 3] + 3) % VOCAB
    return clean, corrupt


def metric(logits: torch.Tensor) -> torch.Tensor:
    """Per prompt: a logit difference at the last position (prompt-dependent tokens)."""
    last = logits[:, -1]
    rows = torch.arange(last.shape[0])
    return last[rows, rows + 1] - last[rows, 2 * rows + 3]


# sweep -> (site, axes as (name, size) given model dims and pos, setter(act, src, index))
def head_count(model: HookedModel, sweep: str) -> int:
    return model.dims.n_kv_heads if sweep in ("k", "v") else model.dims.n_heads


def spec(model: HookedModel, sweep: str) -> tuple[str, list[int], Callable]:
    n = model.dims.n_layers

    def pos_setter(a, s, i):
        a[:, i[1]] = s[:, i[1]]

    def head_setter(a, s, i):
        a[:, :, i[1]] = s[:, :, i[1]]

    def pattern_setter(a, s, i):
        a[:, i[1]] = s[:, i[1]]

    def head_pos_setter(a, s, i):
        a[:, i[1], i[2]] = s[:, i[1], i[2]]

    if sweep in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"):
        return f"hook_{sweep}", [n, P], pos_setter
    if sweep == "attn_head":
        return "attn.hook_z", [n, head_count(model, sweep)], head_setter
    if sweep == "attn_head_pos":
        return "attn.hook_z", [n, P, model.dims.n_heads], head_pos_setter
    if sweep == "pattern":
        return "attn.hook_pattern", [n, model.dims.n_heads], pattern_setter
    return f"attn.hook_{sweep}", [n, head_count(model, sweep)], head_setter


def brute_force(model, base, source, sweep) -> torch.Tensor:
    """Mean metric over prompts, one full forward per index (NaN where not computed)."""
    site, sizes, setter = spec(model, sweep)
    _, cache = model.run_with_cache(source, f"blocks.*.{site}")
    out = torch.full(sizes, float("nan"))
    cells = list(itertools.product(*map(range, sizes)))
    for index in cells[:: -(-len(cells) // MAX_CELLS)]:
        name = f"blocks.{index[0]}.{site}"

        def hook(act, _hook, index=index, src=cache[name]):
            act = act.clone()
            setter(act, src, index)
            return act

        out[index] = metric(model.run_with_hooks(base, fwd_hooks=[(name, hook)])).mean()
    return out


def sweeps_for(model: HookedModel) -> list[str]:
    names = [s for s in SWEEPS if s != "neuron"]
    if model.dims.parallel:  # parallel attention and MLP: there is no resid_mid
        names.remove("resid_mid")
    return names


CASES = [(kind, "denoise") for kind in KINDS] + [("llama", "noise"), ("gpt2", "noise")]


@pytest.mark.parametrize(("kind", "direction"), CASES)
def test_engine_equals_one_forward_per_patch(kind: str, direction: str) -> None:
    model = HookedModel(tiny_model(kind))
    clean, corrupt = pair()
    base, source = (corrupt, clean) if direction == "denoise" else (clean, corrupt)
    with torch.no_grad():
        for sweep in sweeps_for(model):
            # chunk=3 splits the variants of a layer over several forwards
            got = patch(model, clean, corrupt, metric, sweep, direction=direction, chunk=3)
            want = brute_force(model, base, source, sweep)
            assert got.values.shape == want.shape, sweep
            done = ~want.isnan()
            torch.testing.assert_close(got.values[done], want[done], atol=TOL, rtol=0, msg=sweep)
            # unembedding only the position the metric reads changes nothing
            last = torch.full((B,), P - 1)
            read = patch(model, clean, corrupt, metric, sweep, direction=direction, read_pos=last)
            torch.testing.assert_close(read.values[done], want[done], atol=TOL, rtol=0, msg=sweep)
            assert got.clean == pytest.approx(float(metric(model(clean)).mean()), abs=TOL)
            assert got.corrupt == pytest.approx(float(metric(model(corrupt)).mean()), abs=TOL)


def test_read_pos_errors() -> None:
    model = HookedModel(tiny_model("llama"))
    clean, corrupt = pair()
    last = torch.full((B,), P - 1)

    def first(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, 0, 1]

    with torch.no_grad(), pytest.raises(MechscopeError, match="other than read_pos"):
        patch(model, clean, corrupt, first, "resid_pre", read_pos=last)
    for bad in (torch.tensor([P - 1]), torch.tensor([P, 0]), torch.tensor([-1, 0])):
        with pytest.raises(MechscopeError, match="read_pos must hold one position"):
            patch(model, clean, corrupt, metric, "resid_pre", read_pos=bad)


def test_identical_slices_are_not_run() -> None:
    """A patch whose source slice equals the base slice is the base run: no forward is made."""
    model = HookedModel(tiny_model("llama"))
    clean, corrupt = pair()
    calls = []
    layer0 = model.hf.model.layers[0]
    handle = layer0.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        with torch.no_grad():
            got = patch(model, clean, clean.clone(), metric, "attn_head")
    finally:
        handle.remove()
    assert calls == [B, B, B]  # the base, source and key/value recording runs only
    with torch.no_grad():
        base = float(metric(model(clean)).mean())
    torch.testing.assert_close(got.values, torch.full_like(got.values, base))
