"""Subspace interchange interventions on a tiny random model: exact identities and bad input."""

from __future__ import annotations

import pytest
import torch

from mechscope.causal import Counterfactuals, interchange, pca_basis, random_basis, site_size
from mechscope.causal.abstract import CausalModel, counterfactuals
from mechscope.causal.das import Rotation, Runner, iia
from mechscope.causal.subspace import direction_basis, swap
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def model() -> HookedModel:
    return HookedModel(tiny_model("llama"), tiny_tokenizer(["one", "two", "three"]))


def tokens(seed: int, n: int = 6, pos: int = 7) -> torch.Tensor:
    return torch.randint(3, 100, (n, pos), generator=torch.Generator().manual_seed(seed))


def test_full_swap_everywhere_is_the_source_run(model: HookedModel) -> None:
    base, source = tokens(0), tokens(1)
    out = interchange(model, base, source, "blocks.0.hook_resid_pre", list(range(7)))
    with torch.no_grad():
        torch.testing.assert_close(out, model(source), atol=1e-5, rtol=1e-5)


def test_a_complete_basis_is_the_full_swap(model: HookedModel) -> None:
    base, source = tokens(2), tokens(3)
    d = site_size(model, "blocks.1.attn.hook_z")
    assert d == 48  # 6 heads x 8
    full = random_basis(d, d, seed=4)
    args = (model, base, source, "blocks.1.attn.hook_z", [2, 5])
    torch.testing.assert_close(interchange(*args, full), interchange(*args), atol=1e-4, rtol=1e-4)


def test_swap_is_pyvene_rotate_replace_unrotate() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(10, 10, generator=g))[0]
    base, source = torch.randn(4, 3, 10, generator=g), torch.randn(4, 3, 10, generator=g)
    rb, rs = base @ q, source @ q
    rb[..., :3] = rs[..., :3]
    torch.testing.assert_close(swap(base, source, q[:, :3]), rb @ q.T, atol=1e-5, rtol=1e-5)
    rot = Rotation(10, 3, boundless=True)
    rot.temperature = 1e-4  # the soft mask becomes a hard one at boundary 3/10
    w = rot.weight.detach()
    torch.testing.assert_close(rot(base, source), swap(base, source, w[:, :3]), atol=1e-5, rtol=0)


def test_a_subspace_outside_the_causal_path_changes_nothing(model: HookedModel) -> None:
    """Swapping at a position after the one read cannot change the logits read there."""
    base, source = tokens(5), tokens(6)
    out = interchange(model, base, source, "blocks.1.hook_resid_pre", [6], random_basis(48, 5))
    with torch.no_grad():
        torch.testing.assert_close(out[:, :6], model(base)[:, :6], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(out[:, 6], model(base)[:, 6], atol=1e-3)


def test_the_run_from_path_equals_the_hook_path(model: HookedModel) -> None:
    data = Counterfactuals.from_lists(
        tokens(7).tolist(), tokens(8).tolist(), [5] * 6, [6] * 6, name="t"
    )
    fast = Runner(model, data, "blocks.1.hook_resid_pre", [2, 4])
    slow = Runner(model, data, "blocks.1.hook_resid_pre", [2, 4])
    assert fast.layer == 1
    slow.layer = None
    basis = random_basis(48, 3, seed=1)
    index = torch.arange(6)
    with torch.no_grad():
        a = fast.logits(index, lambda h, s: swap(h, s, basis))
        b = slow.logits(index, lambda h, s: swap(h, s, basis))
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_fixed_bases() -> None:
    acts = torch.randn(200, 6) * torch.tensor([5.0, 1, 1, 1, 1, 0.1])
    top = pca_basis(acts, 1)[:, 0]
    assert abs(float(top[0])) > 0.99
    b = direction_basis(torch.tensor([[1.0, 1, 0, 0, 0, 0], [1.0, 0, 0, 0, 0, 0]]))
    torch.testing.assert_close(b.T @ b, torch.eye(2), atol=1e-6, rtol=0)
    with pytest.raises(MechscopeError, match="linearly dependent"):
        direction_basis(torch.tensor([[1.0, 2, 0], [2.0, 4, 0]]))


def test_pairs_of_different_lengths_fail_in_one_line(model: HookedModel) -> None:
    with pytest.raises(MechscopeError, match="differ in length") as e:
        interchange(model, tokens(0, pos=5), tokens(1, pos=6), "blocks.0.hook_resid_pre", 0)
    assert "\n" not in str(e.value)
    with pytest.raises(MechscopeError, match="pair 1: base is 3 tokens but source is 2"):
        Counterfactuals.from_lists([[1, 2], [1, 2, 3]], [[1, 2], [1, 2]], [0, 0], [0, 0])


def test_a_subspace_larger_than_the_site_fails(model: HookedModel) -> None:
    with pytest.raises(MechscopeError, match="larger than site") as e:
        interchange(model, tokens(0), tokens(1), "blocks.0.hook_resid_pre", 0, torch.randn(48, 49))
    assert "choose k <= 48" in str(e.value)
    data = Counterfactuals.from_lists(tokens(0).tolist(), tokens(1).tolist(), [1] * 6, [1] * 6)
    with pytest.raises(MechscopeError, match="larger than site"):
        from mechscope.causal import DASConfig, train_das

        train_das(model, data, data, "blocks.0.hook_resid_pre", [0], DASConfig(k=49, steps=1))


def test_causal_model_outputs_must_be_single_tokens(model: HookedModel) -> None:
    cm = CausalModel(inputs=("x",), mechanisms={"y": lambda v: v["x"]}, output="y")
    words = {0: "one", 1: "two three"}
    with pytest.raises(MechscopeError, match="'two three', 2 tokens") as e:
        counterfactuals(
            cm,
            ["y"],
            lambda rng: {"x": rng.randrange(2)},
            lambda v: "one two",
            lambda y: words[y],
            8,
            tokenizer=model.tokenizer,
        )
    assert "\n" not in str(e.value)


def test_causal_model_counterfactual() -> None:
    from mechscope.causal.toy import EQUALITY

    base, source = {"a": 1, "b": 1, "c": 2, "d": 3}, {"a": 4, "b": 5, "c": 6, "d": 6}
    assert EQUALITY.run(base)["O"] is False
    assert EQUALITY.counterfactual(base, source, ["V1"]) is True  # V1 false == V2 false
    assert EQUALITY.counterfactual(base, source, ["V2"]) is True  # V1 true == V2 true
    assert EQUALITY.counterfactual(base, source, ["V1", "V2"]) is False  # the source's output
    with pytest.raises(MechscopeError, match="no variable 'V3'"):
        EQUALITY.run(base, {"V3": 1})


def test_iia_of_a_planted_subspace(model: HookedModel) -> None:
    """Labels made by a planted 2-d subspace: that subspace scores 1, the full swap does not."""
    site, planted = "blocks.1.hook_resid_pre", random_basis(48, 2, seed=9)
    base, source = tokens(10, n=40), tokens(11, n=40)
    with torch.no_grad():
        labels = interchange(model, base, source, site, [6], planted)[:, -1].argmax(-1)
        own = model(base)[:, -1].argmax(-1)
    data = Counterfactuals.from_lists(base.tolist(), source.tolist(), labels.tolist(), own.tolist())
    assert bool(iia(model, data, site, "last", planted).all())
    assert float(iia(model, data, site, "last", random_basis(48, 2, seed=3)).float().mean()) < 1
