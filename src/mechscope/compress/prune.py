"""Structured pruning: remove whole heads and MLP neurons, whose groups then cost no bits.

Units and the groups they free (width 0: all zeros, nothing stored):

- a query head: its q rows and its o columns (so its write is exactly zero); its key/value head's
  k and v rows only when every query head sharing them (grouped-query attention) is pruned;
- a gated-MLP neuron: its gate and up rows (its activation is then ``act(0) * 0 = 0``, so its
  down column contributes nothing); a down group (64 columns of one row) only when all of its 64
  neurons are pruned.

Each unit is scored by the summed loss table of its groups at the reference width (what the
allocation would lose by quantizing it there, task importance included); the ``fraction`` of
heads and the ``fraction`` of neurons with the smallest scores are pruned. The freed bits go back
to the knapsack: the budget stays ``bits * all quantized weights``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from mechscope.compress.groups import Layout, WeightInfo
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.progress import progress

Tensor = torch.Tensor


def _slices(info: WeightInfo) -> Tensor:
    """[out, groups_per_row] global group indices of a weight."""
    return torch.arange(info.offset, info.offset + info.n_groups).view(info.out_features, -1)


def _check(layout: Layout, d_head: int) -> dict[tuple[int, str], WeightInfo]:
    by = {(w.layer, w.kind): w for w in layout.weights}
    kinds = {k for _, k in by}
    if not {"q", "k", "v", "o", "gate", "up"} <= kinds:
        raise MechscopeError(
            "structured pruning needs separate q/k/v projections and a gated MLP; "
            "compress without --prune"
        )
    if d_head % layout.group_size:
        raise MechscopeError(
            f"pruning heads needs whole o_proj groups: d_head {d_head} is not a multiple of the "
            f"group size {layout.group_size}; pick a group size dividing it"
        )
    return by


def prune_groups(
    layout: Layout, score: Tensor, n_heads: int, n_kv: int, d_head: int, fraction: float
) -> Tensor:
    """[group] bool: the groups of the pruned units (``score`` [group]: a group's loss): the
    ``fraction`` of query heads and of neurons whose groups' scores sum lowest
    (:func:`group_unit_scores`), chosen by :func:`select_units` and freed by
    :func:`unit_groups` (the one path from scores to groups, shared with ``--prune-neurons``)."""
    if not 0 <= fraction < 1:
        raise MechscopeError(f"prune fraction must be in [0, 1), got {fraction}")
    if fraction == 0:
        return torch.zeros(layout.n_groups, dtype=torch.bool)
    heads, neurons = group_unit_scores(layout, score, n_heads, d_head)
    units = select_units(heads, neurons, n_heads, n_kv, int(fraction * heads.numel()),
                         int(fraction * neurons.numel()))  # fmt: skip
    return unit_groups(layout, units, d_head)


def group_unit_scores(
    layout: Layout, score: Tensor, n_heads: int, d_head: int
) -> tuple[Tensor, Tensor]:
    """(``[layer n_heads]``, ``[layer d_mlp]``) float64: each query head's summed ``score`` over
    its q-row and o-column groups, each neuron's over its gate- and up-row groups."""
    by = _check(layout, d_head)
    n_layers = 1 + max(w.layer for w in layout.weights)
    per = d_head // layout.group_size
    score = score.double()
    heads, neurons = [], []
    for layer in range(n_layers):
        q, o = _slices(by[layer, "q"]), _slices(by[layer, "o"])
        q_h = q.reshape(n_heads, -1)  # a head's d_head rows, row-major
        o_h = o.view(o.shape[0], n_heads, per).transpose(0, 1).reshape(n_heads, -1)
        heads.append(torch.cat([score[q_h], score[o_h]], 1).sum(1))
        gate, up = _slices(by[layer, "gate"]), _slices(by[layer, "up"])
        neurons.append(torch.cat([score[gate], score[up]], 1).sum(1))
    return torch.stack(heads), torch.stack(neurons)


# --- whole units: selecting, zeroing and scoring heads and neurons (bench_prune.py) -----------


@dataclass(frozen=True)
class Units:
    """Pruned units, all bool: query heads ``[layer n_heads]``, key/value heads ``[layer n_kv]``
    (only with every query head sharing them), MLP neurons ``[layer d_mlp]``."""

    heads: Tensor
    kv: Tensor
    neurons: Tensor

    def params(self, d_model: int, d_head: int) -> int:
        """Weights removed from the dense matrices: a query head's q rows and o columns
        (``2 d_head d_model``), a key/value head's k and v rows (the same), a neuron's gate and
        up rows and down column (``3 d_model``)."""
        heads = int(self.heads.sum()) + int(self.kv.sum())
        return heads * 2 * d_head * d_model + int(self.neurons.sum()) * 3 * d_model


def select_units(
    head_score: Tensor, neuron_score: Tensor, n_heads: int, n_kv: int, k_heads: int,
    k_neurons: int, gqa: bool = False,
) -> Units:  # fmt: skip
    """The ``k_heads`` heads and ``k_neurons`` neurons (``neuron_score [layer d_mlp]``) with the
    smallest scores (ties: the lower index). Heads: with ``gqa``, ``k_heads`` whole key/value
    groups (a key/value head and every query head sharing it) ranked by ``head_score
    [layer n_kv]``; else ``k_heads`` query heads ranked by ``head_score [layer n_heads]``, a
    key/value head going only when all of its query heads go."""
    layers = neuron_score.shape[0]
    want = (layers, n_kv if gqa else n_heads)
    if tuple(head_score.shape) != want:
        raise MechscopeError(f"head scores of shape {tuple(head_score.shape)}, expected {want}")
    if gqa:
        kv = _lowest(head_score, k_heads)
        heads = kv.repeat_interleave(n_heads // n_kv, dim=1)
    else:
        heads = _lowest(head_score, k_heads)
        kv = heads.view(layers, n_kv, -1).all(-1)
    return Units(heads, kv, _lowest(neuron_score, k_neurons))


def _lowest(score: Tensor, k: int) -> Tensor:
    flat = score.flatten().double()
    if not 0 <= k <= flat.numel():
        raise MechscopeError(f"cannot prune {k} of {flat.numel()} units; pick 0..{flat.numel()}")
    out = torch.zeros(flat.numel(), dtype=torch.bool)
    out[torch.sort(flat, stable=True).indices[:k]] = True
    return out.view(score.shape)


def unit_groups(layout: Layout, units: Units, d_head: int) -> Tensor:
    """[group] bool: the groups ``units`` free (width 0): a query head's q rows and o columns, a
    key/value head's k and v rows, a neuron's gate and up rows, and a down group when all 64
    neurons of its columns are pruned."""
    by = _check(layout, d_head)
    out = torch.zeros(layout.n_groups, dtype=torch.bool)
    for (layer, kind), info in by.items():
        g = _slices(info)
        if kind in ("q", "k", "v"):
            mask = units.heads[layer] if kind == "q" else units.kv[layer]
            out[g[mask.repeat_interleave(d_head)].flatten()] = True
        elif kind == "o":
            cols = units.heads[layer].repeat_interleave(d_head // layout.group_size)
            out[g[:, cols].flatten()] = True
        elif kind in ("gate", "up"):
            out[g[units.neurons[layer]].flatten()] = True
        elif kind == "down":
            cols = units.neurons[layer].view(-1, layout.group_size).all(1)
            out[g[:, cols].flatten()] = True
    return out


@torch.no_grad()
def zero_units(model: HookedModel, layout: Layout, units: Units) -> None:
    """Zero the weights of ``units`` in place: a query head's q rows and o columns, a key/value
    head's k and v rows, a neuron's gate and up rows and down column. The head's write and the
    neuron's activation are then exactly zero (tests/compress/test_prune_units.py checks it
    against zeroing ``attn.hook_z`` and ``mlp.hook_post``)."""
    d_head = model.dims.d_head
    by = _check(layout, d_head)
    for (layer, kind), info in by.items():
        w = model.hf.get_parameter(info.name)
        if kind in ("q", "k", "v"):
            mask = units.heads[layer] if kind == "q" else units.kv[layer]
            w[mask.repeat_interleave(d_head)] = 0
        elif kind == "o":
            w[:, units.heads[layer].repeat_interleave(d_head)] = 0
        elif kind in ("gate", "up"):
            w[units.neurons[layer]] = 0
        elif kind == "down":
            w[:, units.neurons[layer]] = 0


def removal_effects(
    model: HookedModel, runs: Iterable[Callable[[], Tensor]], *, quiet: bool = True
) -> tuple[Tensor, Tensor]:
    """First-order effect of removing each unit, per example: ``(heads [example layer head],
    neurons [example layer d_mlp])`` with entries ``-sum_pos dv/da . a`` (``a`` the head's
    ``attn.hook_z`` slice or the neuron's ``mlp.hook_post``: what zeroing it changes). Each run
    does a forward and returns one value per example ``[n]``; examples must not interact (one
    backward of their sum gives every example's own gradient). The squares summed over
    examples are the unit's Fisher (the empirical Fisher of a mask on the unit)."""
    names = ("blocks.*.attn.hook_z", "blocks.*.mlp.hook_post")
    heads, neurons = [], []
    for run in progress(list(runs), desc="removal effects", quiet=quiet):
        acts: dict[str, Tensor] = {}
        keep = _keeper(acts)
        with torch.enable_grad(), model.hooks(fwd=[("hook_embed", _leaf)]):
            with model.hooks(fwd=[(n, keep) for n in names]):
                values = run()
            keys = sorted(acts, key=_site_order)
            grads = torch.autograd.grad(values.sum(), [acts[k] for k in keys])
        eff = {k: -(g.float() * acts[k].detach().float()) for k, g in zip(keys, grads)}
        heads.append(torch.stack([eff[k].sum((1, 3)) for k in keys if k.endswith("hook_z")], 1))
        neurons.append(torch.stack([eff[k].sum(1) for k in keys if k.endswith("hook_post")], 1))
    return torch.cat(heads), torch.cat(neurons)


def _leaf(t: Tensor, hook: Any) -> Tensor:
    """The embeddings as a leaf needing grad, so the activations after them are in the graph."""
    return t.detach().requires_grad_(True)


def _keeper(acts: dict[str, Tensor]) -> Callable[[Tensor, Any], Tensor]:
    def keep(t: Tensor, hook: Any) -> Tensor:
        acts[hook.name] = t.clone()  # a replacement, so the forward reads it (a site's view of
        return acts[hook.name]  # a module input is not itself on the path to the output)

    return keep


def _site_order(name: str) -> tuple[int, str]:
    return int(name.split(".")[1]), name


def neuron_removal_score(
    model: HookedModel,
    lm_batches: Iterable[Tensor],
    tasks: Iterable[Callable[[], Tensor]] = (),
    lm_weight: float = 1.0,
    task_weight: float = 1.0,
    *,
    quiet: bool = True,
) -> Tensor:
    """[layer d_mlp] ``lm_weight * F_lm + task_weight * sum_t F_t``, each the mask Fisher of the
    neurons (:func:`removal_effects` squared and summed over examples) normalised to mean 1:
    ``F_lm`` over the windows of ``lm_batches`` (each window's mean next-token loss), ``F_t``
    over the examples of each task run (one value per example). The score of
    ``bench_prune.py``'s ``circuit (gradient)`` (``fisher`` without tasks)."""

    def lm(tokens: Tensor) -> Callable[[], Tensor]:
        def run() -> Tensor:
            logits = model.forward(tokens).float()
            ce = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none"
            )
            return ce.mean(1)

        return run

    def fisher(runs: list[Callable[[], Tensor]]) -> Tensor:
        f = removal_effects(model, runs, quiet=quiet)[1].double().square().sum(0)
        return f / f.mean().clamp_min(1e-30)

    score = lm_weight * fisher([lm(t) for t in lm_batches])
    for run in tasks:
        score = score + task_weight * fisher([run])
    return score
