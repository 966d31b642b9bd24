"""Bit allocation: a multiple-choice knapsack over weight groups.

Each group ``g`` picks one width ``w`` with storage cost ``cost[w]`` (bits, the same table for
every group) and loss ``loss[g, w]`` (its importance-weighted quantization error); the allocation
minimises the total loss subject to ``sum cost <= budget`` (equivalently, maximises the retained
importance). Two solvers:

- ``dp``: exact dynamic programming over the budget, ``O(groups * budget * widths)``; used when
  that product is small (tests check it against brute force);
- ``hull``: the LP relaxation of the multiple-choice knapsack (Sinha and Zoltners 1979). Per
  group, the lower convex hull of its (cost, loss) options gives upgrades of decreasing
  efficiency (loss saved per bit); all groups' upgrades are taken in order of efficiency while
  the budget lasts, then the leftover bits are spent on the best upgrades that still fit. The
  LP optimum is a lower bound on any allocation's loss, so ``lower_bound`` certifies how far the
  answer can be from the exact optimum (one group's upgrade at most).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import numpy as np
import torch

from mechscope.errors import MechscopeError

Tensor = torch.Tensor
EXACT_LIMIT = 20_000_000  # groups * budget units * widths below which ``dp`` runs


@dataclass(frozen=True)
class Allocation:
    """The chosen option index per group ``[group]`` and the solution's totals."""

    choice: Tensor
    loss: float
    cost: int
    budget: int
    solver: str
    lower_bound: float  # no allocation within the budget has a smaller total loss


def _units(cost: list[int], budget: int) -> tuple[np.ndarray, int]:
    g = 0
    for c in cost:
        g = gcd(g, int(c))
    return np.asarray(cost, dtype=np.int64) // g, int(budget) // g


def allocate(loss: Tensor, cost: list[int], budget: int, solver: str = "auto") -> Allocation:
    """Minimise ``sum_g loss[g, choice_g]`` with ``sum_g cost[choice_g] <= budget``.

    ``loss`` is ``[group option]``, ``cost`` the bits of each option, ``budget`` total bits.
    """
    loss_np = loss.detach().double().cpu().numpy()
    n, k = loss_np.shape
    if len(cost) != k:
        raise MechscopeError(f"{k} options per group but {len(cost)} costs")
    units, cap = _units(cost, budget)
    need = int(units.min()) * n
    if cap < need:
        raise MechscopeError(
            f"the budget ({budget} bits) is below the smallest width for all {n} groups "
            f"({need * (cost[int(units.argmin())] // int(units.min()))} bits); raise it"
        )
    if solver == "auto":
        solver = "dp" if n * (cap + 1) * k <= EXACT_LIMIT else "hull"
    if solver == "dp":
        choice = _dp(loss_np, units, cap)
        total = float(loss_np[np.arange(n), choice].sum())
        bound = total
    elif solver == "hull":
        choice, bound = _hull(loss_np, units, cap)
        total = float(loss_np[np.arange(n), choice].sum())
    else:
        raise MechscopeError(f"unknown solver {solver!r}; choose dp, hull or auto")
    spent = int(np.asarray(cost)[choice].sum())
    return Allocation(
        torch.from_numpy(choice), total, spent, int(budget), solver, min(bound, total)
    )


def _dp(loss: np.ndarray, units: np.ndarray, cap: int) -> np.ndarray:
    """Exact: best[c] = least loss of the groups so far with total cost exactly c."""
    n, k = loss.shape
    best = np.full(cap + 1, np.inf)
    best[0] = 0.0
    picks = np.zeros((n, cap + 1), dtype=np.int8)
    for g in range(n):
        new = np.full(cap + 1, np.inf)
        for j in range(k):
            u = int(units[j])
            if u > cap:
                continue
            cand = np.full(cap + 1, np.inf)
            cand[u:] = best[: cap + 1 - u] + loss[g, j]
            better = cand < new
            new[better] = cand[better]
            picks[g, better] = j
        best = new
    c = int(np.argmin(best))
    choice = np.zeros(n, dtype=np.int64)
    for g in range(n - 1, -1, -1):
        choice[g] = picks[g, c]
        c -= int(units[choice[g]])
    return choice


def _hull_steps(loss: np.ndarray, units: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """Gift-wrapping of every group's lower convex hull at once, from its cheapest option.

    Returns, per step, (groups, from option, to option, cost, gain) arrays; along one group's
    steps the efficiency gain/cost never increases.
    """
    order = np.argsort(units, kind="stable")
    n = loss.shape[0]
    cur = np.full(n, order[0])
    steps = []
    live = np.arange(n)
    while live.size:
        dc = units[None, :] - units[cur[live]][:, None]
        gain = loss[live, cur[live]][:, None] - loss[live]
        eff = np.where(dc > 0, gain / np.where(dc > 0, dc, 1), -np.inf)
        nxt = eff.argmax(axis=1)
        ok = eff[np.arange(live.size), nxt] > 0
        g, frm, to = live[ok], cur[live[ok]], nxt[ok]
        if not g.size:
            break
        steps.append((g, frm, to, units[to] - units[frm], loss[g, frm] - loss[g, to]))
        cur[g] = to
        live = g
    return steps


def _hull(loss: np.ndarray, units: np.ndarray, cap: int) -> tuple[np.ndarray, float]:
    n = loss.shape[0]
    base = int(np.argmin(units))
    choice = np.full(n, base, dtype=np.int64)
    left = cap - int(units[base]) * n
    steps = _hull_steps(loss, units)
    if not steps:
        return choice, float(loss[:, base].sum())
    g, frm, to, dc, gain = (np.concatenate(x) for x in zip(*steps))
    rank = np.concatenate([np.full(s[0].size, i) for i, s in enumerate(steps)])
    order = np.lexsort((rank, -(gain / dc)))  # by efficiency, then hull order within a group
    g, frm, to, dc, gain = g[order], frm[order], to[order], dc[order], gain[order]
    spent = np.cumsum(dc)
    k = int(np.searchsorted(spent, left, side="right"))  # steps 0..k-1 fit
    choice[g[:k]] = to[:k]
    left -= int(spent[k - 1]) if k else 0
    total = float(loss[np.arange(n), choice].sum())
    if k == len(g):
        return choice, total
    bound = total - gain[k] * left / dc[k]  # the LP optimum takes a fraction of step k
    # spend the rest on the best upgrades that still fit (each group's next hull step)
    cand = np.flatnonzero((dc <= left) & (choice[g] == frm))
    cand = cand[cand >= k]
    smallest = int(dc[cand].min()) if cand.size else left + 1
    for i in cand:
        if left < smallest:
            break
        if dc[i] <= left and choice[g[i]] == frm[i]:
            choice[g[i]] = to[i]
            left -= int(dc[i])
    return choice, float(bound)
