"""IIA by site and position: one DAS run per (site, position), as a heatmap ``[site pos]``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mechscope.causal.das import DASConfig, DASResult, train_das
from mechscope.causal.data import Counterfactuals
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.progress import progress


@dataclass(frozen=True)
class IIAMap:
    """Held-out IIA of DAS at every site (rows) and position (columns), with every result."""

    sites: list[str]
    positions: list[int | str]
    results: list[DASResult]  # row-major: sites x positions

    @property
    def iia(self) -> np.ndarray:
        values = [r.test_iia for r in self.results]
        return np.array(values).reshape(len(self.sites), len(self.positions))

    def best(self) -> DASResult:
        return max(self.results, key=lambda r: r.test_iia)

    def to_dict(self) -> dict[str, Any]:
        return {
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


def iia_sweep(
    model: HookedModel,
    train: Counterfactuals,
    test: Counterfactuals,
    sites: Sequence[str],
    positions: Sequence[int | str],
    config: DASConfig | None = None,
    *,
    quiet: bool = True,
) -> IIAMap:
    """Train DAS at each site and each single position (an int, or ``"last"``)."""
    config = config or DASConfig()
    grid = [(s, p) for s in sites for p in positions]
    results = [
        train_das(model, train, test, s, p if isinstance(p, str) else [p], config)
        for s, p in progress(grid, desc="DAS sweep", quiet=quiet)
    ]
    return IIAMap(list(sites), list(positions), results)
