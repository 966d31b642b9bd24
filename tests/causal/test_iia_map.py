"""IIA maps by site and named position (``iia_sweep``): exact identities on a tiny random model.

Pairs differ at one token whose position varies from pair to pair (as IOI's S2 does across
templates), named ``"D"``. At the embeddings a full swap there *is* the source run, so it scores
1; at a position before every difference base and source agree, so any swap is the identity and
scores the unintervened rate; a difference PCA that spans every difference equals the full swap.
"""

from __future__ import annotations

import pytest
import torch

from mechscope.causal import Counterfactuals, DASConfig
from mechscope.causal.das import difference_basis
from mechscope.causal.sweep import iia_sweep
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer

N, POS = 12, 8


@pytest.fixture(scope="module")
def model() -> HookedModel:
    return HookedModel(tiny_model("llama"), tiny_tokenizer(["one", "two"]))


@pytest.fixture(scope="module")
def pairs(model: HookedModel) -> Counterfactuals:
    g = torch.Generator().manual_seed(0)
    base = torch.randint(3, 100, (N, POS), generator=g)
    where = torch.randint(2, POS - 1, (N,), generator=g)  # 2..6: never 0, never the last
    source = base.clone()
    source[torch.arange(N), where] = torch.randint(3, 100, (N,), generator=g)
    with torch.no_grad():
        label = model(source)[:, -1].argmax(-1)
        own = model(base)[:, -1].argmax(-1)
    data = Counterfactuals.from_lists(base.tolist(), source.tolist(), label.tolist(), own.tolist())
    assert len(set(where.tolist())) > 2 and bool((label != own).any())
    return Counterfactuals(**{**vars(data), "positions": {"D": where}})


def test_full_swap_by_named_position(model: HookedModel, pairs: Counterfactuals) -> None:
    found = iia_sweep(model, pairs, pairs, ["blocks.0.hook_resid_pre"], ["D", 0, 1, "last"],
                      method="full")  # fmt: skip
    unintervened = float((pairs.label == pairs.base_label).float().mean())
    assert found.iia[0].tolist() == [1.0, unintervened, unintervened, unintervened]
    assert found.results[0].positions == "D" and found.results[1].positions == [0]
    assert found.ci().shape == (1, 4, 2) and found.to_dict()["method"] == "full"


def test_difference_pca_spanning_every_difference_is_the_full_swap(
    model: HookedModel, pairs: Counterfactuals
) -> None:
    site = "blocks.0.hook_resid_pre"
    full = iia_sweep(model, pairs, pairs, [site], ["D"], method="full").results[0]
    pca = iia_sweep(model, pairs, pairs, [site], ["D"], DASConfig(k=N), method="pca").results[0]
    assert pca.k == N and pca.train_iia is None
    assert torch.equal(pca.test_correct, full.test_correct) and pca.test_iia == 1.0
    basis = difference_basis(model, pairs, site, "D", 2)
    torch.testing.assert_close(basis.T @ basis, torch.eye(2), atol=1e-5, rtol=0)


def test_named_positions_follow_subsets_and_fail_in_one_line(pairs: Counterfactuals) -> None:
    train, test = pairs.split(0.25, seed=1)
    assert len(train.positions["D"]) == len(train) and len(test.positions["D"]) == len(test)
    both = torch.cat([train.resolve("D")[:, 0], test.resolve("D")[:, 0]])
    assert sorted(both.tolist()) == sorted(pairs.positions["D"].tolist())
    assert pairs.resolve(["D", "last"]).tolist() == [
        [int(p), POS - 1] for p in pairs.positions["D"]
    ]
    with pytest.raises(MechscopeError, match="unknown position 'S2'; these pairs name last, D"):
        pairs.resolve("S2")


def test_unknown_method_fails(model: HookedModel, pairs: Counterfactuals) -> None:
    with pytest.raises(MechscopeError, match="choose one of das, pca, full"):
        iia_sweep(model, pairs, pairs, ["blocks.0.hook_resid_pre"], ["D"], method="boundless")
