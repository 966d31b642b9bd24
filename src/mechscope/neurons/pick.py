"""Which units of a scan are worth showing: spread over firing densities, not tied to a position.

:func:`pick_spread` keeps the units that

1. fire (activation > 0) on a share of tokens within ``density`` (rare enough to be specific,
   common enough to have examples) and have a full set of top windows;
2. are not tied to one position: at most ``max_position_share`` of their top windows peak at the
   same position of the window (a unit whose examples all peak at one position reads the
   position, such as an attention sink, rather than the text);

then sorts them by density, cuts them into ``n`` groups of equal size (density quantiles) and
takes from each group the unit with the largest maximum. The report's SAE section and the feature
database use it; :attr:`Picked.rule` says in words how the units were picked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mechscope.neurons.scan import NeuronScan

__all__ = ["Picked", "pick_spread", "position_share"]


@dataclass(frozen=True)
class Picked:
    """Positions in the scan of the picked units (densest group first), and the rule in words."""

    positions: list[int]
    rule: str
    n_eligible: int  # units that passed the filters


def position_share(scan: NeuronScan) -> torch.Tensor:
    """[unit] the largest share of a unit's top windows that peak at one and the same position."""
    top = scan.top
    filled = top.windows >= 0  # [unit k]
    onehot = torch.nn.functional.one_hot(top.positions, scan.seq_len) * filled[..., None]
    counts = onehot.sum(1).amax(-1)  # [unit]
    return counts.double() / filled.sum(1).clamp(min=1)


def pick_spread(
    scan: NeuronScan,
    n: int,
    *,
    density: tuple[float, float] = (0.001, 0.05),
    max_position_share: float = 0.5,
) -> Picked:
    """Up to ``n`` units spread over density quantiles (see the module docstring)."""
    lo, hi = density
    dens = scan.histogram.density()
    full = (scan.top.windows >= 0).all(1)
    ok = (dens >= lo) & (dens <= hi) & full & (position_share(scan) <= max_position_share)
    eligible = ok.nonzero().flatten()
    order = eligible[torch.sort(dens[eligible], descending=True, stable=True).indices]
    groups = torch.tensor_split(order, min(n, len(order))) if n and len(order) else []
    maxima = scan.max
    picked = [int(g[torch.argmax(maxima[g])]) for g in groups]
    first = "" if scan.include_first else " (each window's first position left out)"
    rule = (
        f"units firing on {100 * lo:g}%-{100 * hi:g}% of tokens{first} whose top windows peak at "
        f"one position at most {100 * max_position_share:g}% of the time, cut into {len(groups)} "
        "groups of equal size by density; from each group the unit with the largest activation"
    )
    return Picked(picked, rule, len(eligible))
