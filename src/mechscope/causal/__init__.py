"""Causal variables: subspace interchange interventions, DAS, high-level causal models.

Usage::

    pairs = counterfactuals(causal_model, ["V1"], sample, render, to_token, n=512)
    train, test = pairs.split()
    result = train_das(model, train, test, "blocks.1.hook_resid_pre", positions=[1])
    result.test_iia  # interchange intervention accuracy on held-out pairs
    interchange(model, base, source, site, positions, basis)  # logits of one intervention
"""

from mechscope.causal.abstract import CausalModel, counterfactuals
from mechscope.causal.das import DASConfig, DASResult, Rotation, iia, random_control, train_das
from mechscope.causal.data import Counterfactuals, from_task
from mechscope.causal.subspace import (
    direction_basis,
    interchange,
    pca_basis,
    random_basis,
    site_size,
)

__all__ = [
    "CausalModel",
    "Counterfactuals",
    "DASConfig",
    "DASResult",
    "Rotation",
    "counterfactuals",
    "direction_basis",
    "from_task",
    "iia",
    "interchange",
    "pca_basis",
    "random_basis",
    "random_control",
    "site_size",
    "train_das",
]
