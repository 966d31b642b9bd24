"""IIA by site and position as a heatmap ``[site pos]``: at every cell one interchange
intervention of the held-out pairs, with a basis chosen by ``method``:

- ``"full"``: the whole vector (activation patching of that position; not a ceiling for a
  subspace, which can score higher by leaving out a part that works against the label);
- ``"pca"``: the fixed top-``k`` difference PCA of the training pairs at that cell
  (:func:`mechscope.causal.das.difference_basis`; no training);
- ``"das"``: a ``k``-dimensional subspace trained by DAS (the costly one).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mechscope.causal.das import (
    DASConfig,
    DASResult,
    describe,
    difference_basis,
    iia,
    train_das,
)
from mechscope.causal.data import Counterfactuals
from mechscope.causal.subspace import site_size
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.progress import progress

Tensor = torch.Tensor

METHODS = ("das", "pca", "full")


@dataclass(frozen=True)
class IIAMap:
    """Held-out IIA at every site (rows) and position (columns), with every result."""

    sites: list[str]
    positions: list[int | str]
    results: list[DASResult]  # row-major: sites x positions
    method: str = "das"

    @property
    def iia(self) -> np.ndarray:
        values = [r.test_iia for r in self.results]
        return np.array(values).reshape(len(self.sites), len(self.positions))

    def ci(self) -> np.ndarray:
        """``[site pos 2]``: each cell's 95% bootstrap interval over the held-out pairs."""
        from mechscope.stats import bootstrap_ci

        cells = [bootstrap_ci(r.test_correct.float()) for r in self.results]
        return np.array(cells, dtype=float).reshape(len(self.sites), len(self.positions), 2)

    def best(self) -> DASResult:
        return max(self.results, key=lambda r: r.test_iia)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "sites": self.sites,
            "positions": self.positions,
            "iia": self.iia.tolist(),
            "best": self.best().to_dict(),
            "results": [r.to_dict() for r in self.results],
        }


def expand_sites(site: str, layers: Sequence[int] | None, n_layers: int) -> list[str]:
    """``site`` itself, or one site per layer when it holds ``{L}`` (default every layer)."""
    if "{L}" not in site:
        if layers:
            raise MechscopeError(
                "--layers needs a site pattern with {L}, e.g. blocks.{L}.hook_resid_pre"
            )
        return [site]
    return [site.replace("{L}", str(layer)) for layer in (layers or range(n_layers))]


def fixed_cell(
    model: HookedModel,
    train: Counterfactuals,
    test: Counterfactuals,
    site: str,
    positions: Any,
    method: str,
    k: int,
    acts: Mapping[str, tuple[Tensor, Tensor]] | None = None,
) -> DASResult:
    """One cell with a fixed basis: the whole vector (``"full"``) or the difference PCA.
    ``acts``: ``{"train": (base, source), "test": ...}`` activations at the site, if cached."""
    cpu = time.process_time()
    acts = acts or {}
    basis = None
    if method == "pca":
        basis = difference_basis(model, train, site, positions, k, acts.get("train"))
    correct = iia(model, test, site, positions, basis, acts.get("test"))
    return DASResult(
        site=site,
        positions=describe(positions),
        k=site_size(model, site) if basis is None else basis.shape[1],
        basis=basis,
        train_iia=None,
        test_iia=float(correct.float().mean()),
        test_correct=correct,
        fit_cpu_seconds=time.process_time() - cpu,
        method=method,
    )


def site_acts(
    model: HookedModel, data: Counterfactuals, sites: Sequence[str]
) -> dict[str, tuple[Tensor, Tensor]]:
    """``{site: (base, source)}`` activations ``[pair pos ...]``: one run of each for all sites."""
    with torch.no_grad():
        _, base = model.run_with_cache(data.base, list(sites), data.mask)
        _, source = model.run_with_cache(data.source, list(sites), data.mask)
    return {s: (base[s], source[s]) for s in sites}


def iia_sweep(
    model: HookedModel,
    train: Counterfactuals,
    test: Counterfactuals,
    sites: Sequence[str],
    positions: Sequence[int | str],
    config: DASConfig | None = None,
    *,
    method: str = "das",
    quiet: bool = True,
) -> IIAMap:
    """IIA at each site and each single position (an int, ``"last"`` or a name the pairs carry,
    such as IOI's ``"S2"``), with ``method``'s basis (see the module); ``config.k`` is the size."""
    if method not in METHODS:
        raise MechscopeError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    config = config or DASConfig()
    for p in positions:  # a bad name fails before any training
        train.resolve(p if isinstance(p, str) else [p])
    grid = [(s, p if isinstance(p, str) else [p]) for s in sites for p in positions]
    cached: dict[str, dict[str, tuple[Tensor, Tensor]]] = {}
    if method != "das":  # every site from one run of each prompt set
        cached = {"test": site_acts(model, test, sites)}
        if method == "pca":
            cached["train"] = site_acts(model, train, sites)
    results = []
    for s, p in progress(grid, desc=f"IIA sweep ({method})", quiet=quiet):
        if method == "das":
            results.append(train_das(model, train, test, s, p, config))
        else:
            acts = {name: by_site[s] for name, by_site in cached.items()}
            results.append(fixed_cell(model, train, test, s, p, method, config.k, acts))
    return IIAMap(list(sites), list(positions), results, method)
