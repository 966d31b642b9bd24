"""Whole-unit pruning is exact: zeroing a neuron's weights equals zeroing its activation in a
forward hook, zeroing a query head's weights equals zeroing its ``attn.hook_z`` slice, a key/value
head goes only with all its query heads, and the removal effects are the derivative of the metric
along a unit's scale."""

from __future__ import annotations

import pytest
import torch
from compress_helpers import GS, tiny_llama

from mechscope.compress.groups import linear_weights
from mechscope.compress.prune import (
    Units,
    removal_effects,
    select_units,
    unit_groups,
    zero_units,
)
from mechscope.errors import MechscopeError

L, H, KV, DH, M = 3, 6, 2, 8, 80  # the tiny llama's layers, heads, kv heads, d_head, d_mlp


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(2, 101, (3, 10), generator=torch.Generator().manual_seed(seed))


def units(seed: int, gqa: bool = False) -> Units:
    g = torch.Generator().manual_seed(seed)
    shape = (L, KV) if gqa else (L, H)
    return select_units(torch.rand(shape, generator=g), torch.rand(L, M, generator=g), H, KV,
                        2 if gqa else 5, 40, gqa=gqa)  # fmt: skip


def hooked_zero(u: Units) -> list:
    def heads(z: torch.Tensor, hook) -> torch.Tensor:  # [batch pos head d_head]
        z = z.clone()
        z[:, :, u.heads[int(hook.name.split(".")[1])]] = 0
        return z

    def neurons(a: torch.Tensor, hook) -> torch.Tensor:  # [batch pos d_mlp]
        a = a.clone()
        a[..., u.neurons[int(hook.name.split(".")[1])]] = 0
        return a

    return [("blocks.*.attn.hook_z", heads), ("blocks.*.mlp.hook_post", neurons)]


def scaler(s: torch.Tensor, idx: int, heads: bool):  # type: ignore[no-untyped-def]
    """A hook multiplying unit ``idx`` of each example by ``s [example]``."""

    def scale(a: torch.Tensor, hook) -> torch.Tensor:
        unit = torch.zeros(a.shape[2] if heads else a.shape[-1])
        unit[idx] = 1
        if heads:  # [batch pos head d_head]
            return a * (1 + unit[None, None, :, None] * (s[:, None, None, None] - 1))
        return a * (1 + unit[None, None] * (s[:, None, None] - 1))

    return scale


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("gqa", [False, True])
def test_zeroed_weights_equal_zeroed_activations(seed: int, gqa: bool) -> None:
    u = units(seed, gqa)
    assert u.heads.any() and u.neurons.any()
    pruned, hooked = tiny_llama(), tiny_llama()
    zero_units(pruned, linear_weights(pruned, GS), u)
    with torch.no_grad():
        with hooked.hooks(fwd=hooked_zero(u)):
            expected = hooked.forward(tokens(seed))
        got = pruned.forward(tokens(seed))
        assert torch.equal(got, expected)
        assert not torch.equal(got, tiny_llama().forward(tokens(seed)))  # something was pruned


def test_only_neurons_or_only_heads_match_their_own_hook() -> None:
    u = units(0)
    for part in ("heads", "neurons"):
        only = Units(**{k: v if k == part or (k == "kv" and part == "heads")
                        else torch.zeros_like(v) for k, v in vars(u).items()})  # fmt: skip
        pruned, hooked = tiny_llama(), tiny_llama()
        zero_units(pruned, linear_weights(pruned, GS), only)
        with torch.no_grad(), hooked.hooks(fwd=hooked_zero(only)):
            assert torch.equal(pruned.forward(tokens()), hooked.forward(tokens()))


def test_kv_head_goes_only_with_all_its_query_heads() -> None:
    score = torch.ones(L, H)
    score[0, [0, 1]] = 0  # two of kv head 0's three query heads
    score[1, [3, 4, 5]] = -1  # all of layer 1's kv head 1
    u = select_units(score, torch.zeros(L, M), H, KV, 5, 0)
    assert u.heads.sum() == 5 and u.kv.sum() == 1 and u.kv[1, 1] and not u.kv[0].any()
    assert u.params(64, DH) == 6 * 2 * DH * 64
    groups = select_units(torch.tensor([[3.0, 1], [0, 2], [5, 4]]), torch.zeros(L, M), H, KV,
                          2, 0, gqa=True)  # fmt: skip
    assert groups.kv.tolist() == [[False, True], [True, False], [False, False]]
    assert groups.heads[0].tolist() == [False] * 3 + [True] * 3 and groups.heads.sum() == 6
    # a kv head whose k/v rows are zeroed while one of its query heads lives changes the output
    m = tiny_llama()
    zero_units(m, linear_weights(m, GS), Units(torch.zeros(L, H, dtype=torch.bool), u.kv,
                                               torch.zeros(L, M, dtype=torch.bool)))  # fmt: skip
    with torch.no_grad():
        assert not torch.equal(m.forward(tokens()), tiny_llama().forward(tokens()))


def test_select_units_errors() -> None:
    with pytest.raises(MechscopeError, match="cannot prune 99"):
        select_units(torch.zeros(L, H), torch.zeros(L, M), H, KV, 99, 0)
    with pytest.raises(MechscopeError, match="expected"):
        select_units(torch.zeros(L, H), torch.zeros(L, M), H, KV, 1, 0, gqa=True)


def test_removal_effects_are_the_derivative_along_each_unit_scale() -> None:
    model = tiny_llama()
    tok = tokens()

    def run() -> torch.Tensor:
        return model.forward(tok)[:, -1, 7]

    heads, neurons = removal_effects(model, [run, run])
    assert heads.shape == (6, L, H) and neurons.shape == (6, L, M)
    assert torch.equal(heads[:3], heads[3:])
    for layer, h, n in ((0, 2, 5), (2, 5, 70)):
        for site, idx, got in (("attn.hook_z", h, heads[:3, layer, h]),
                               ("mlp.hook_post", n, neurons[:3, layer, n])):  # fmt: skip
            s = torch.ones(3, requires_grad=True)
            hook = scaler(s, idx, heads=site == "attn.hook_z")
            with torch.enable_grad(), model.hooks(fwd=[(f"blocks.{layer}.{site}", hook)]):
                (d,) = torch.autograd.grad(model.forward(tok)[:, -1, 7].sum(), s)
            assert torch.allclose(got, -d, atol=1e-6, rtol=1e-4), (site, got, -d)
            assert got.abs().max() > 1e-6


@pytest.mark.parametrize("gqa", [False, True])
def test_unit_groups_are_the_zeroed_weights_groups(gqa: bool) -> None:
    u = units(3, gqa)
    n = u.neurons.clone()
    n[1, :GS] = True  # one whole down group (8 neurons of layer 1)
    u = Units(u.heads, u.kv, n)
    model = tiny_llama()
    layout = linear_weights(model, GS)
    zero_units(model, layout, u)
    zeroed = torch.cat([model.hf.get_parameter(w.name).detach().reshape(-1, GS).eq(0).all(1)
                        for w in layout.weights])  # fmt: skip
    freed = unit_groups(layout, u, DH)
    down = torch.cat([torch.full((w.n_groups,), w.kind == "down") for w in layout.weights])
    assert torch.equal(freed & ~down, zeroed & ~down)  # every zeroed row/column group, no other
    assert (
        torch.equal(freed & down, zeroed & down & freed) and (freed & down).sum() == 48
    )  # d_model rows


def test_knapsack_gives_a_chosen_pruned_mask_width_zero_and_its_bits_to_the_rest() -> None:
    from mechscope.compress.methods import Inputs, knapsack
    from mechscope.compress.quant import WIDTHS, effective_bits

    layout = linear_weights(tiny_llama(), GS)
    mask = unit_groups(layout, units(0), DH)
    g = torch.Generator().manual_seed(0)
    loss = torch.rand(layout.n_groups, 1, generator=g, dtype=torch.float64)
    loss = loss * 4.0 ** -torch.tensor(WIDTHS, dtype=torch.float64)
    widths = knapsack(Inputs(layout, WIDTHS, 8.0, {}, pruned=mask), loss)
    assert (widths[mask] == 0).all() and (widths[~mask] > 0).all()
    assert effective_bits(widths, GS) <= 8.0
    assert effective_bits(widths[~mask], GS) > 8.0  # the freed bits went to the live groups


def test_compress_prune_neurons_removes_the_lowest_removal_fisher_neurons(
    calib: list[torch.Tensor],
) -> None:
    from mechscope.compress import CompressConfig, compress
    from mechscope.compress.prune import neuron_removal_score

    score = neuron_removal_score(tiny_llama(), calib)  # LM term only: the fisher method
    expected = select_units(torch.zeros(L, H), score, H, KV, 0, round(0.25 * L * M)).neurons
    model = tiny_llama()
    config = CompressConfig(bits=6.0, method="fisher", group_size=GS, prune_neurons=0.25)
    result = compress(model, config, calib=calib)
    assert result.effective_bits <= 6.0 and result.recount.violations == 0
    assert result.histogram()["all"][0] > 0
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens(), names="blocks.*.mlp.hook_post")
    dead = torch.stack([(cache[f"blocks.{i}.mlp.hook_post"] == 0).all(0).all(0) for i in range(L)])
    assert torch.equal(dead, expected) and int(dead.sum()) == 60
    with pytest.raises(MechscopeError, match="prune-neurons"):
        CompressConfig(bits=6.0, method="uniform", group_size=GS, prune_neurons=0.1)
    with pytest.raises(MechscopeError, match="prune-neurons"):
        CompressConfig(bits=6.0, method="fisher", group_size=GS, prune_neurons=1.5)
