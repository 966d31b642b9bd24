"""Allocation methods: the circuit-guided one and the baselines, all at equal effective bits.

Each method returns a width per group ``[group]`` meeting the budget. All but ``uniform`` and
``shuffled`` minimise a loss table ``[group width]`` with the knapsack allocator
(:func:`mechscope.compress.allocate.allocate`):

- ``circuit``: the general-LM term ``F_g(b)`` (the Fisher table, normalised to mean 1 at 3
  bits) scaled by the protected tasks' importance: ``F_g(b) * (lm_weight + task_weight * t_g)``
  with ``t`` the EAP-IG node scores mapped to slices (mean 1 per task, :mod:`.importance`); with
  ``importance="gradient"`` instead ``lm_weight * F_g(b) + task_weight * T_g(b)``, ``T`` the
  tasks' own Fisher table (squared task-metric gradients per prompt, normalised the same way);
- ``uniform``: one width everywhere; between two widths, every k-th group takes the wider one;
- ``random``: ``u_g * 4^-b`` with ``u_g`` uniform random (a random allocation; one per seed);
- ``awq``: ``act_g(b)`` alone (AWQ-style activation saliency);
- ``fisher``: ``sum F dw^2`` with the squared LM-loss gradient; ``taylor``: ``|sum g dw|``;
- ``layer``: ``mse_g(b)`` weighted 8x in the first and last decoder layers (wider there);
- ``shuffled``: the circuit method's widths permuted at random over the groups (the same bit
  histogram and effective bits, with the importance detached from the groups): the control.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from mechscope.compress.allocate import allocate
from mechscope.compress.groups import Layout
from mechscope.compress.prune import prune_groups
from mechscope.compress.quant import effective_bits, group_bits
from mechscope.errors import MechscopeError

Tensor = torch.Tensor
LAYER_FACTOR = 8.0


@dataclass(frozen=True)
class Inputs:
    """What the methods read: tables ``{kind: [group width]}``, the task importance ``[group]``."""

    layout: Layout
    widths: tuple[int, ...]
    bits: float
    tables: dict[str, Tensor]
    task: Tensor | None = None
    seed: int = 0
    lm_weight: float = 1.0
    task_weight: float = 0.1
    importance: str = "eap-ig"  # eap-ig: node scores on slices; gradient: the tasks' Fisher
    prune: float = 0.0  # fraction of heads and of neurons to prune (structured), see .prune
    heads: tuple[int, int, int] | None = None  # (n_heads, n_kv_heads, d_head), for pruning
    pruned: Tensor | None = None  # [group] bool chosen elsewhere (prune.unit_groups): width 0

    @property
    def budget(self) -> int:
        return int(self.bits * self.layout.numel)

    @property
    def costs(self) -> list[int]:
        return [group_bits(w, self.layout.group_size) for w in self.widths]


def knapsack(inp: Inputs, loss: Tensor) -> Tensor:
    """Widths minimising ``loss [group width]`` within the budget; with ``inp.prune`` the
    pruned heads' and neurons' groups take width 0 and their bits go to the others."""
    if inp.pruned is not None:
        pruned = inp.pruned
    elif not inp.prune:
        return torch.tensor(inp.widths)[allocate(loss, inp.costs, inp.budget).choice]
    elif inp.heads is None:
        raise MechscopeError("pruning needs the model's head dims (Inputs.heads)")
    else:
        pruned = prune_groups(inp.layout, loss[:, _reference(inp)], *inp.heads, inp.prune)
    widths = torch.zeros(inp.layout.n_groups, dtype=torch.long)
    alloc = allocate(loss[~pruned], inp.costs, inp.budget)
    widths[~pruned] = torch.tensor(inp.widths)[alloc.choice]
    return widths


def _need(inp: Inputs, kind: str, method: str) -> Tensor:
    if kind not in inp.tables:
        raise MechscopeError(f"method {method!r} needs the {kind!r} error table; compute it first")
    return inp.tables[kind]


def _reference(inp: Inputs) -> int:
    """Index of the width the tables are normalised at: 3 bits if allowed, else the narrowest."""
    return inp.widths.index(3) if 3 in inp.widths else 0


def normalised(table: Tensor, ref: int) -> Tensor:
    """``table / mean_g table[g, ref]``: mean 1 over the groups at the reference width."""
    table = table.double()
    return table / table[:, ref].mean().clamp_min(1e-30)


def circuit_loss(inp: Inputs) -> Tensor:
    """The circuit method's loss table (see the module docstring)."""
    ref = _reference(inp)
    general = normalised(_need(inp, "fisher", "circuit"), ref)
    if inp.importance == "gradient":
        return inp.lm_weight * general + inp.task_weight * _need(inp, "task", "circuit").double()
    if inp.task is None:
        raise MechscopeError("method 'circuit' needs protected tasks; pass --protect TASKS")
    return general * (inp.lm_weight + inp.task_weight * inp.task.double())[:, None]


def circuit(inp: Inputs) -> Tensor:
    return knapsack(inp, circuit_loss(inp))


def uniform(inp: Inputs) -> Tensor:
    if inp.prune:
        raise MechscopeError("--prune works with the knapsack methods, not with uniform")
    gs, n = inp.layout.group_size, inp.layout.n_groups
    eff = [effective_bits(torch.tensor([w]), gs) for w in inp.widths]
    fits = [i for i, e in enumerate(eff) if e <= inp.bits + 1e-9]
    if not fits:
        raise MechscopeError(f"budget {inp.bits} is below the smallest width ({eff[0]} bits)")
    lo = fits[-1]
    out = torch.full((n,), inp.widths[lo])
    if lo + 1 < len(inp.widths):
        frac = (inp.bits - eff[lo]) / (eff[lo + 1] - eff[lo])
        i = torch.arange(n, dtype=torch.float64)
        wide = torch.floor((i + 1) * frac) > torch.floor(i * frac)
        out[wide] = inp.widths[lo + 1]
        while effective_bits(out, gs) > inp.bits:  # float rounding: drop the last wide group
            out[wide.nonzero()[-1]] = inp.widths[lo]
            wide[wide.nonzero()[-1]] = False
    return out


def random(inp: Inputs) -> Tensor:
    gen = torch.Generator().manual_seed(inp.seed)
    u = torch.rand(inp.layout.n_groups, 1, generator=gen, dtype=torch.float64)
    return knapsack(inp, u * 4.0 ** -torch.tensor(inp.widths, dtype=torch.float64)[None])


def awq(inp: Inputs) -> Tensor:
    return knapsack(inp, _need(inp, "act", "awq"))


def fisher(inp: Inputs) -> Tensor:
    return knapsack(inp, _need(inp, "fisher", "fisher"))


def taylor(inp: Inputs) -> Tensor:
    return knapsack(inp, _need(inp, "taylor", "taylor"))


def layer(inp: Inputs) -> Tensor:
    layers = inp.layout.layer_of_groups()
    last = int(layers.max())
    weight = torch.where((layers == 0) | (layers == last), LAYER_FACTOR, 1.0)
    return knapsack(inp, weight[:, None].double() * _need(inp, "mse", "layer").double())


def shuffled(inp: Inputs) -> Tensor:
    widths = circuit(inp)
    gen = torch.Generator().manual_seed(inp.seed + 1)
    return widths[torch.randperm(len(widths), generator=gen)]


METHODS: dict[str, Callable[[Inputs], Tensor]] = {
    "circuit": circuit,
    "uniform": uniform,
    "random": random,
    "awq": awq,
    "fisher": fisher,
    "taylor": taylor,
    "layer": layer,
    "shuffled": shuffled,
}
NEEDS = {"circuit": "fisher", "awq": "act", "shuffled": "fisher", "fisher": "fisher",
         "taylor": "taylor"}  # fmt: skip
TASK_METHODS = ("circuit", "shuffled")


def check_method(name: str) -> None:
    if name not in METHODS:
        raise MechscopeError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
