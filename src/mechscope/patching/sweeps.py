"""The sweeps: which site each patches, over which axes, and the registry :data:`SWEEPS`.

Every sweep has TransformerLens's semantics (``transformer_lens.patching.get_act_patch_*``): a
variant copies one slice of the source run's activation into the base run at one layer.

==============  ===========================  ====================  =================================
sweep           site (layer L)               axes                  TransformerLens get_act_patch_...
==============  ===========================  ====================  =================================
resid_pre       hook_resid_pre               (layer, pos)          resid_pre
resid_mid       hook_resid_mid               (layer, pos)          resid_mid
resid_post      hook_resid_post              (layer, pos)          resid_pre, shifted by a layer
attn_out        hook_attn_out                (layer, pos)          attn_out
mlp_out         hook_mlp_out                 (layer, pos)          mlp_out
attn_head       attn.hook_z, all positions   (layer, head)         attn_head_out_all_pos
attn_head_pos   attn.hook_z                  (layer, pos, head)    attn_head_out_by_pos
q, k, v         attn.hook_q/k/v, all pos.    (layer, head)         attn_head_{q,k,v}_all_pos
pattern         attn.hook_pattern            (layer, head)         attn_head_pattern_all_pos
neuron          mlp.hook_post, all pos.      (neuron,), one layer  none
==============  ===========================  ====================  =================================

Under grouped-query attention the k and v sweeps run over the key/value heads (``n_kv_heads``),
as TransformerLens does (``cfg.n_key_value_heads``): one key/value head serves several query heads.
Residual-stream sweeps edit the residual a forward starts from (resid_post at L is resid_pre at
L+1, or the input of the final norm after the last layer); the others hook the site.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from mechscope.errors import MechscopeError
from mechscope.patching.engine import Index, prepare, run_variants
from mechscope.patching.pair import Pair, Runs

Tensor = torch.Tensor
Swept = tuple[tuple[str, ...], Tensor, Runs]  # axes, metric [*axes batch], the unpatched runs
SweepFn = Callable[[Pair, "int | None", "Sequence[int] | None"], Swept]

ALL = slice(None)


def _layers(pair: Pair, layer: int | None, layers: Sequence[int] | None) -> list[int]:
    n = pair.model.dims.n_layers
    if layer is not None:
        raise MechscopeError(
            "layer= applies only to the neuron sweep; use layers=[...] for the others"
        )
    if layers is None:
        return list(range(n))
    picked = sorted({int(i) for i in layers})
    if not picked or picked[0] < 0 or picked[-1] >= n:
        raise MechscopeError(
            f"layers= must be a non-empty list of layers in [0, {n}), got {layers}"
        )
    return picked


def _starts(src: Tensor, base: Tensor, indices: Sequence[Index], pattern: bool) -> list[int | None]:
    """Per variant: None if its source slice equals the base slice (nothing to patch), else the
    first position where they differ (a one-position index: that position; pattern: 0)."""
    out: list[int | None] = []
    for index in indices:
        differs = src[index] != base[index]
        if not bool(differs.any()):
            out.append(None)
        elif pattern:
            out.append(0)
        elif isinstance(index[1], int):
            out.append(index[1])
        else:  # all positions: the slice keeps [batch pos ...]
            per_pos = differs.flatten(2).any(-1).any(0) if differs.ndim > 2 else differs.any(0)
            out.append(int(per_pos.nonzero()[0, 0]))
    return out


def _sweep(
    pair: Pair,
    site: str,
    layers: Sequence[int],
    indices: Sequence[Index],
    residual: int | None = None,
    pattern: bool = False,
) -> tuple[Tensor, Runs]:
    """Metric [layer variant batch] over every layer of the model; layers not in ``layers`` are NaN.
    ``residual=k``: the site is resid_pre of layer L+k.

    Variants whose source slice equals the base slice are not run (their value is the base
    metric); the others start at the first position where the slices differ, since no position
    before it changes.
    """
    names = [site.format(layer) for layer in layers]
    runs = prepare(pair, names, positional=not pattern)  # a pattern patch starts at position 0
    out = runs.base_metric.repeat(pair.model.dims.n_layers, len(indices), 1)
    out[[i for i in range(out.shape[0]) if i not in layers]] = float("nan")
    for layer, name in zip(layers, names):
        src = runs.source[name]
        starts = _starts(src, runs.base[name], indices, pattern)
        todo = [i for i, s in enumerate(starts) if s is not None]
        if not todo:
            continue
        positions = [starts[i] for i in todo]
        picked = [indices[i] for i in todo]
        if residual is None:
            values = run_variants(runs, layer, name, src, picked, positions)
        else:
            values = run_variants(runs, layer + residual, None, src, picked, positions)
        out[layer, todo] = values
    return out, runs


def _by_pos(site: str, residual: int | None = None) -> SweepFn:
    def sweep(pair: Pair, layer: int | None, layers: Sequence[int] | None) -> Swept:
        pos = pair.base.shape[1]
        indices = [(ALL, p) for p in range(pos)]
        values, runs = _sweep(pair, site, _layers(pair, layer, layers), indices, residual)
        return ("layer", "pos"), values, runs

    return sweep


def _by_head(site: str, kv: bool = False, pattern: bool = False) -> SweepFn:
    def sweep(pair: Pair, layer: int | None, layers: Sequence[int] | None) -> Swept:
        dims = pair.model.dims
        heads = dims.n_kv_heads if kv else dims.n_heads
        # pattern is [batch head query_pos key_pos]; q, k, v, z are [batch pos head d_head]
        indices = [(ALL, h) if pattern else (ALL, ALL, h) for h in range(heads)]
        picked = _layers(pair, layer, layers)
        values, runs = _sweep(pair, site, picked, indices, pattern=pattern)
        return ("layer", "head"), values, runs

    return sweep


def _head_pos(pair: Pair, layer: int | None, layers: Sequence[int] | None) -> Swept:
    pos, heads = pair.base.shape[1], pair.model.dims.n_heads
    indices = [(ALL, p, h) for p in range(pos) for h in range(heads)]
    picked = _layers(pair, layer, layers)
    values, runs = _sweep(pair, "blocks.{}.attn.hook_z", picked, indices)
    return ("layer", "pos", "head"), values.unflatten(1, (pos, heads)), runs


def _neuron(pair: Pair, layer: int | None, layers: Sequence[int] | None) -> Swept:
    n = pair.model.dims.n_layers
    if layers is not None:
        raise MechscopeError(
            "the neuron sweep takes one layer= (its axis is the neuron), not layers="
        )
    if layer is None or not 0 <= layer < n:
        raise MechscopeError(f"the neuron sweep needs layer= in [0, {n}), got {layer}")
    indices = [(ALL, ALL, i) for i in range(pair.model.dims.d_mlp)]
    values, runs = _sweep(pair, "blocks.{}.mlp.hook_post", [layer], indices)
    return ("neuron",), values[layer], runs


SWEEPS: dict[str, SweepFn] = {
    "resid_pre": _by_pos("blocks.{}.hook_resid_pre", residual=0),
    "resid_mid": _by_pos("blocks.{}.hook_resid_mid"),
    "resid_post": _by_pos("blocks.{}.hook_resid_post", residual=1),
    "attn_out": _by_pos("blocks.{}.hook_attn_out"),
    "mlp_out": _by_pos("blocks.{}.hook_mlp_out"),
    "attn_head": _by_head("blocks.{}.attn.hook_z"),
    "attn_head_pos": _head_pos,
    "q": _by_head("blocks.{}.attn.hook_q"),
    "k": _by_head("blocks.{}.attn.hook_k", kv=True),
    "v": _by_head("blocks.{}.attn.hook_v", kv=True),
    "pattern": _by_head("blocks.{}.attn.hook_pattern", pattern=True),
    "neuron": _neuron,
}
