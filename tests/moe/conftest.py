"""Shared MoE fixtures: the tiny random model of every MoE family, and the planted MoE."""

from __future__ import annotations

import pytest
import torch

from mechscope import HookedModel
from mechscope.models.tiny import CONFIGS, VOCAB, tiny_model, tiny_tokenizer
from mechscope.moe.planted import PlantedMoE, chain_batch, train_planted_moe

MOE_KINDS = [k for k in CONFIGS if getattr(CONFIGS[k](), "num_experts_per_tok", None)]
X = torch.randint(2, VOCAB, (3, 10), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def moe_x() -> torch.Tensor:
    return X


@pytest.fixture(scope="session", params=MOE_KINDS)
def moe_model(request: pytest.FixtureRequest) -> tuple[str, HookedModel]:
    return request.param, HookedModel(tiny_model(request.param), tiny_tokenizer())


@pytest.fixture(scope="session")
def planted() -> PlantedMoE:
    return train_planted_moe(steps=150, seed=0)


@pytest.fixture(scope="session")
def planted_three() -> PlantedMoE:
    """A second planted case: 3 classes on 3 experts (top 2), another seed."""
    return train_planted_moe(n_classes=3, per_class=10, steps=150, seed=1)


@pytest.fixture(scope="session")
def planted_windows(planted: PlantedMoE) -> torch.Tensor:
    """Chains from start tokens the training stream did not draw in this order (seed 5)."""
    ids = torch.tensor(sorted(planted.classes))
    g = torch.Generator().manual_seed(5)
    return chain_batch(planted.successor, ids[torch.randint(len(ids), (16,), generator=g)], 16)
