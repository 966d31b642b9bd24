"""Path patching: identities, the direct effect by hand, and agreement with activation patching."""

from __future__ import annotations

import pytest
import torch

from mechscope import HookedModel
from mechscope.errors import MechscopeError
from mechscope.models.tiny import VOCAB, tiny_model
from mechscope.patching import patch
from mechscope.patching.path import path_patch, path_patch_heads
from mechscope.patching.receivers import Receiver, parse_receiver

B, P = 2, 5
TOL = 1e-5


def pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, VOCAB, (B, P), generator=g)
    corrupt = clean.clone()
    corrupt[:, 2] = (clean[:, 2] + 7) % VOCAB
    corrupt[1, 3] = (clean[1, 3] + 3) % VOCAB
    return clean, corrupt


CLEAN, CORRUPT = pair()


def metric(logits: torch.Tensor) -> torch.Tensor:
    last = logits[:, -1]
    rows = torch.arange(last.shape[0])
    return last[rows, rows + 1] - last[rows, 2 * rows + 3]


def run(model: HookedModel, senders, receivers, **kw) -> float:
    return float(path_patch(model, CLEAN, CORRUPT, metric, senders, receivers, **kw).values)


@pytest.mark.parametrize("receivers", ["logits", "L2H1.q", ("L2H4", "k"), "MLP1", "L2.resid_pre"])
def test_no_sender_changes_nothing(receivers) -> None:
    model = HookedModel(tiny_model("llama"))
    result = path_patch(model, CLEAN, CORRUPT, metric, "", receivers)
    assert float(result.values) == pytest.approx(result.clean, abs=TOL)


@pytest.mark.parametrize(
    ("kind", "sender"),
    [
        ("llama", "L0H3"),
        ("gpt2", "L1H2"),
        ("gpt_neox", "L0H1"),
        ("mixtral", "L0H5"),
        ("llama", "MLP1"),
        ("gpt2", "MLP0"),
    ],
)
def test_to_logits_is_the_direct_effect_through_the_recomputed_final_norm(kind, sender) -> None:
    """unembed(final_norm(resid_final_clean + corrupted output - clean output of the sender))."""
    model = HookedModel(tiny_model(kind))
    n, f = model.dims.n_layers, model.family
    if sender.startswith("MLP"):
        layer, site, pick = int(sender[3:]), "hook_mlp_out", lambda t: t
    else:
        layer, head = map(int, sender[1:].split("H"))
        site, pick = "attn.hook_result", lambda t: t[:, :, head]
    names = [f"blocks.{layer}.{site}", f"blocks.{n - 1}.hook_resid_post"]
    with torch.no_grad():
        _, clean = model.run_with_cache(CLEAN, names)
        _, corrupt = model.run_with_cache(CORRUPT, names[:1])
        delta = pick(corrupt[names[0]]) - pick(clean[names[0]])
        norm, unembed = model.hf.get_submodule(f.final_norm), model.hf.get_submodule(f.unembed)
        want = metric(unembed(norm(clean[names[1]] + delta))).mean()
    assert run(model, sender, "logits") == pytest.approx(float(want), abs=TOL)


@pytest.mark.parametrize("qkv", ["q", "k", "v"])
def test_to_a_head_input_by_hand(qkv: str) -> None:
    """Sender L0H1 -> L2H4's q/k/v: the frozen run's residual before layer 2 is the clean one plus
    the sender's direct change; the receiver's input is computed from it and patched alone."""
    model = HookedModel(tiny_model("llama"))  # 6 heads, 2 KV heads: head 4 reads KV head 1
    site = f"blocks.2.attn.hook_{qkv}"
    index = 4 if qkv == "q" else 1
    with torch.no_grad():
        _, clean = model.run_with_cache(CLEAN, "blocks.0.attn.hook_result")
        _, corrupt = model.run_with_cache(CORRUPT, "blocks.0.attn.hook_result")
        r = "blocks.0.attn.hook_result"
        delta = corrupt[r][:, :, 1] - clean[r][:, :, 1]
        shift = [("blocks.2.hook_resid_pre", lambda t, _h: t + delta)]
        _, moved = model.run_with_cache(CLEAN, site, fwd_hooks=shift)

        def put(t, _h):
            t = t.clone()
            t[:, :, index] = moved[site][:, :, index]
            return t

        want = metric(model.run_with_hooks(CLEAN, [(site, put)])).mean()
    assert run(model, "L0H1", f"L2H4.{qkv}") == pytest.approx(float(want), abs=TOL)


@pytest.mark.parametrize("sender", ["L0H1", "L1H2"])
def test_to_an_mlp_input_by_hand(sender: str) -> None:
    """Sender -> MLP1 input: the MLP's output computed from the clean residual plus the sender's
    change (layer 1's heads kept at their clean values) replaces its clean output alone."""
    model = HookedModel(tiny_model("llama"))
    layer, head = map(int, sender[1:].split("H"))
    z1, out1 = "blocks.1.attn.hook_z", "blocks.1.hook_mlp_out"
    with torch.no_grad():
        _, clean = model.run_with_cache(CLEAN, [f"blocks.{layer}.attn.hook_result", z1])
        _, corrupt = model.run_with_cache(CORRUPT, [f"blocks.{layer}.attn.hook_z"])
        if layer == 0:
            r = "blocks.0.attn.hook_result"
            _, rc = model.run_with_cache(CORRUPT, r)
            delta = rc[r][:, :, head] - clean[r][:, :, head]
            hooks = [("blocks.1.hook_resid_pre", lambda t, _h: t + delta)]
            hooks.append((z1, lambda t, _h: clean[z1]))
        else:

            def swap(t, _h):
                t = t.clone()
                t[:, :, head] = corrupt[z1][:, :, head]
                return t

            hooks = [(z1, swap)]
        _, moved = model.run_with_cache(CLEAN, out1, fwd_hooks=hooks)
        want = metric(model.run_with_hooks(CLEAN, [(out1, lambda t, _h: moved[out1])])).mean()
    assert run(model, sender, "MLP1") == pytest.approx(float(want), abs=TOL)


def test_gqa_key_is_shared_by_the_group() -> None:
    model = HookedModel(tiny_model("llama"))  # heads 0-2 share KV head 0, heads 3-5 KV head 1
    a, b, c = (run(model, "L0H1,L1H0", f"L2H{h}.k") for h in (0, 2, 3))
    assert a == b != c


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gpt_neox"])
def test_unfrozen_equals_activation_patching(kind: str) -> None:
    """freeze=False: step 2 is activation patching of the sender (noising), so patching every
    later component's input (and the final residual), or the residual after the sender's layer,
    gives the activation-patching number of ``patch(..., "attn_head", direction="noise")``."""
    model = HookedModel(tiny_model(kind))
    n, heads = model.dims.n_layers, model.dims.n_heads
    exact = patch(model, CLEAN, CORRUPT, metric, "attn_head", direction="noise").values
    for layer, head in [(0, 1), (1, 3)]:
        later = [
            f"L{lay}H{h}.{x}" for lay in range(layer + 1, n) for h in range(heads) for x in "qkv"
        ]
        first_mlp = layer + 1 if model.dims.parallel else layer  # a parallel MLP reads resid_pre
        later += [f"MLP{lay}" for lay in range(first_mlp, n)] + ["logits"]
        got = run(model, f"L{layer}H{head}", later, freeze=False)
        assert got == pytest.approx(float(exact[layer, head]), abs=TOL)
        got = run(model, f"L{layer}H{head}", f"L{layer + 1}.resid_pre", freeze=False)
        assert got == pytest.approx(float(exact[layer, head]), abs=TOL)
    sweep = path_patch_heads(model, CLEAN, CORRUPT, metric, "logits", freeze=False, quiet=True)
    torch.testing.assert_close(sweep.values, exact, atol=TOL, rtol=0)


def test_unfrozen_mlps_after_the_last_heads_equal_activation_patching() -> None:
    """freeze_mlps=False, sender in the last layer: only that layer's MLP can carry its change
    on, as it does in activation patching (in a parallel block it cannot)."""
    for kind in ("llama", "gpt_neox"):
        model = HookedModel(tiny_model(kind))
        last = model.dims.n_layers - 1
        exact = patch(model, CLEAN, CORRUPT, metric, "attn_head", direction="noise").values
        got = run(model, f"L{last}H1", "logits", freeze_mlps=False)
        assert got == pytest.approx(float(exact[last, 1]), abs=TOL)
        frozen = run(model, f"L{last}H1", "logits")
        assert (frozen == pytest.approx(got, abs=TOL)) == model.dims.parallel


def test_parallel_block_next_residual_needs_no_unfreezing() -> None:
    """In a parallel block nothing in the sender's own layer reads its output, so freezing
    changes nothing about the residual after that layer."""
    model = HookedModel(tiny_model("gpt_neox"))
    exact = patch(model, CLEAN, CORRUPT, metric, "attn_head", direction="noise").values
    assert run(model, "L1H2", "L2.resid_pre") == pytest.approx(float(exact[1, 2]), abs=TOL)


@pytest.mark.parametrize("receiver", ["logits", "L2H1.q", "L2H5.v", "MLP1"])
def test_batched_sweep_equals_one_run_per_sender(receiver: str) -> None:
    model = HookedModel(tiny_model("llama"))
    sweep = path_patch_heads(model, CLEAN, CORRUPT, metric, receiver, chunk=4, quiet=True)
    assert sweep.axes == ("layer", "head")
    for layer in range(sweep.values.shape[0]):
        for head in range(model.dims.n_heads):
            one = run(model, f"L{layer}H{head}", receiver)
            assert float(sweep.values[layer, head]) == pytest.approx(one, abs=TOL)
    assert sweep.values.shape[0] == {"logits": 3, "MLP1": 2}.get(receiver, 2)
    rows = path_patch_heads(model, CLEAN, CORRUPT, metric, receiver, layers=[1], quiet=True)
    torch.testing.assert_close(rows.values[0], sweep.values[1], atol=TOL, rtol=0)


def test_denoise_swaps_base_and_source() -> None:
    model = HookedModel(tiny_model("llama"))
    res = path_patch(model, CLEAN, CORRUPT, metric, "", "logits", direction="denoise")
    assert float(res.values) == pytest.approx(res.corrupt, abs=TOL)
    assert float(res.normalized()) == pytest.approx(0.0, abs=1e-4)


def test_receiver_grammar_and_errors() -> None:
    assert parse_receiver(("L9H6", "q")) == Receiver("q", 9, 6) == parse_receiver("l9h6.Q")
    assert str(parse_receiver("MLP3.in")) == "MLP3"
    assert str(parse_receiver("L4.resid")) == "L4.resid_pre"
    assert parse_receiver("logits") == Receiver("logits")
    model = HookedModel(tiny_model("llama"))
    with pytest.raises(MechscopeError, match="bad receiver"):
        run(model, "L0H0", "L2H1.z")
    with pytest.raises(MechscopeError, match="does not come before"):
        run(model, "L2H0", "L2H1.q")
    with pytest.raises(MechscopeError, match="does not come before"):
        run(model, "MLP1", "MLP1")
    with pytest.raises(MechscopeError, match="heads and MLPs only"):
        run(model, "L0N3", "logits")
    with pytest.raises(MechscopeError, match="layers 0..2"):
        run(model, "L0H0", "L3H0.q")
