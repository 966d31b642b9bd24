"""Attribution patching: a first-order estimate of every activation-patching sweep at once.

Patching a slice ``a`` of an activation from the source run into the base run changes the metric
by about ``(a_source - a_base) . dmetric/da``, the gradient taken on the base run (Nanda 2023,
"Attribution Patching: Activation Patching At Industrial Scale"; Syed, Rager and Conmy 2023,
"Attribution Patching Outperforms Automated Circuit Discovery"). Steps:

1. run the source input once without gradients, caching every site the sweeps need;
2. run the base input once, caching the same sites, and backpropagate the summed per-prompt
   metric to the embeddings, collecting each site's gradient with backward hooks (the prompts do
   not interact, so row ``b`` of a gradient is prompt ``b``'s own; no parameter gradient is kept);
3. per sweep, sum ``(a_source - a_base) * grad`` over the slice that the exact sweep patches
   (d_model, d_head, positions, query and key positions) and add it to the base run's metric.

Denoising takes the corrupted run as base and the clean run as source; noising the reverse. The
sweeps, their sites, axes and shapes are those of :func:`mechscope.patching.patch`, so
``attribution_patch(...).values`` estimates ``patch(...).values``. Two forwards and one backward
serve any number of sweeps (:func:`attribution_patch_sweeps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mechscope.errors import MechscopeError, NotAvailable
from mechscope.models.hooked import HookedModel
from mechscope.patching.pair import Pair, ReadPos, resolve
from mechscope.patching.result import Direction, PatchResult
from mechscope.patching.sweeps import SWEEPS
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import Metric

Tensor = torch.Tensor


@dataclass(frozen=True)
class SweepSpec:
    """Where a sweep reads and how the per-element products reduce to its axes."""

    site: str  # site name with {} for the layer
    reduce: str  # einsum from the site's shape to [*axes batch]
    axes: tuple[str, ...]


_BY_POS = ("bpd->pb", ("layer", "pos"))
SPECS: dict[str, SweepSpec] = {
    "resid_pre": SweepSpec("blocks.{}.hook_resid_pre", *_BY_POS),
    "resid_mid": SweepSpec("blocks.{}.hook_resid_mid", *_BY_POS),
    "resid_post": SweepSpec("blocks.{}.hook_resid_post", *_BY_POS),
    "attn_out": SweepSpec("blocks.{}.hook_attn_out", *_BY_POS),
    "mlp_out": SweepSpec("blocks.{}.hook_mlp_out", *_BY_POS),
    "attn_head": SweepSpec("blocks.{}.attn.hook_z", "bphd->hb", ("layer", "head")),
    "attn_head_pos": SweepSpec("blocks.{}.attn.hook_z", "bphd->phb", ("layer", "pos", "head")),
    "q": SweepSpec("blocks.{}.attn.hook_q", "bphd->hb", ("layer", "head")),
    "k": SweepSpec("blocks.{}.attn.hook_k", "bphd->hb", ("layer", "head")),
    "v": SweepSpec("blocks.{}.attn.hook_v", "bphd->hb", ("layer", "head")),
    "pattern": SweepSpec("blocks.{}.attn.hook_pattern", "bhqk->hb", ("layer", "head")),
    "neuron": SweepSpec("blocks.{}.mlp.hook_post", "bpm->mb", ("neuron",)),
}
assert set(SPECS) == set(SWEEPS), "every exact sweep needs an attribution counterpart"


@dataclass(frozen=True)
class AttributionResult(PatchResult):
    """A :class:`PatchResult` whose ``values`` are first-order estimates, not patched runs.

    ``values`` = base metric + mean over prompts of ``(a_source - a_base) . grad``; ``method``
    records how they were obtained.
    """

    method: str = "attribution_patching"


def _site_names(model: HookedModel, sweep: str, layer: int | None) -> list[str]:
    if sweep not in SPECS:
        raise MechscopeError(f"unknown sweep {sweep!r}; choose one of {', '.join(SPECS)}")
    n = model.dims.n_layers
    if sweep == "neuron":
        if layer is None or not 0 <= layer < n:
            raise MechscopeError(f"the neuron sweep needs layer= in [0, {n}), got {layer}")
        layers = [layer]
    else:
        layers = list(range(n))
    names = [SPECS[sweep].site.format(i) for i in layers]
    for name in names:
        if name not in model.sites:
            raise NotAvailable(
                f"this {model.family.name} model has no site {name!r} for the {sweep} sweep; "
                "choose another sweep"
            )
    return names


def _wide(t: Tensor) -> Tensor:
    """At least float32 (float64 models keep float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _source_run(pair: Pair, names: list[str]) -> tuple[dict[str, Tensor], Tensor]:
    """Step 1: the source run's activations and metric [batch], without gradients."""
    with torch.no_grad():
        logits, cache = pair.model.run_with_cache(
            pair.source, names, pair.mask, read_pos=pair.read_pos
        )
        return dict(cache), _wide(pair.values(logits)).cpu()


def _base_run(pair: Pair, names: list[str]) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
    """Step 2: the base run's activations, their metric gradients and its metric [batch]."""
    model = pair.model
    acts: dict[str, Tensor] = {}
    grads: dict[str, Tensor] = {}
    embed: list[Tensor] = []

    def keep(t: Tensor, hook: Any) -> None:
        acts[hook.name] = t.detach()

    def keep_grad(g: Tensor, hook: Any) -> None:
        grads[hook.name] = g.detach()

    def keep_embed(t: Tensor, _hook: Any) -> Tensor:
        # A leaf equal to the embedding: the backward stops here, whether or not the
        # parameters require gradients, and no parameter gradient is accumulated.
        embed.append(t.detach().requires_grad_(True))
        return embed[-1]

    fwd = [(n, keep) for n in names] + [("hook_embed", keep_embed)]
    with torch.enable_grad(), model.hooks(fwd=fwd, bwd=[(n, keep_grad) for n in names]):
        logits = model.forward(pair.base, pair.mask, pair.read_pos)
        values = pair.values(logits)
        if not values.requires_grad:
            raise MechscopeError(
                "the metric does not depend differentiably on the logits (no gradient); "
                "attribution patching needs a differentiable metric"
            )
        # Rows are independent prompts, so one backward of the sum gives every prompt's gradient.
        torch.autograd.grad(values.sum(), embed)
    missing = [n for n in names if n not in grads]
    if missing:
        raise MechscopeError(
            f"no gradient reached {missing[:3]}; is the metric a function of them?"
        )
    return acts, grads, _wide(values.detach()).cpu()


def _estimate(
    spec: SweepSpec, names: list[str], source: dict[str, Tensor], acts: dict, grads: dict
) -> Tensor:
    """Step 3: the estimated metric change [*axes batch] (layers stacked unless one layer)."""
    per_layer = [
        torch.einsum(spec.reduce, (_wide(source[n]) - _wide(acts[n])) * _wide(grads[n]))
        for n in names
    ]
    if spec.axes[0] != "layer":
        return per_layer[0].cpu()
    return torch.stack(per_layer).cpu()


def attribution_patch_sweeps(
    model: HookedModel,
    batch: TaskBatch,
    metric: Metric,
    sweeps: Sequence[str],
    *legacy: Any,
    direction: Direction = "denoise",
    layer: int | None = None,
    read_pos: ReadPos = "last",
    attention_mask: Tensor | None = None,
) -> dict[str, AttributionResult]:
    """Several attribution-patching sweeps from one source forward and one base forward+backward.

    Arguments are those of :func:`attribution_patch`, with a list of sweep names; ``layer`` is the
    neuron sweep's layer. Returns ``{sweep: AttributionResult}``.
    """
    pair, (sweeps,) = resolve(
        model, batch, (metric, sweeps, *legacy), ("sweeps",), caller="attribution_patch_sweeps",
        direction=direction, read_pos=read_pos, attention_mask=attention_mask,
    )  # fmt: skip
    return _sweeps(pair, list(sweeps), layer)


def _sweeps(pair: Pair, sweeps: list[str], layer: int | None) -> dict[str, AttributionResult]:
    model = pair.model
    if torch.is_inference_mode_enabled():
        raise MechscopeError("attribution patching needs gradients; call it outside inference_mode")
    if layer is not None and "neuron" not in sweeps:
        raise MechscopeError("layer= applies only to the neuron sweep; the others sweep all layers")
    site_names = {sweep: _site_names(model, sweep, layer) for sweep in sweeps}
    names = sorted({n for ns in site_names.values() for n in ns})
    source, source_metric = _source_run(pair, names)
    acts, grads, base_metric = _base_run(pair, names)
    clean, corrupt = pair.clean_corrupt(base_metric, source_metric)
    out = {}
    for sweep in sweeps:
        spec = SPECS[sweep]
        delta = _estimate(spec, site_names[sweep], source, acts, grads)
        out[sweep] = AttributionResult(
            sweep=sweep,
            axes=spec.axes,
            values=(base_metric + delta).mean(-1),
            clean=clean,
            corrupt=corrupt,
            direction=pair.direction,
        )
    return out


def attribution_patch(
    model: HookedModel,
    batch: TaskBatch,
    metric: Metric,
    sweep: str,
    *legacy: Any,
    direction: Direction = "denoise",
    layer: int | None = None,
    read_pos: ReadPos = "last",
    attention_mask: Tensor | None = None,
) -> AttributionResult:
    """Estimate :func:`mechscope.patching.patch` to first order, from two forwards and a backward.

    Args:
        model: the model.
        batch: the task's clean and corrupted prompts, aligned token by token.
        metric: ``metric(logits, batch) -> [batch]``, differentiable (e.g. ``logit_diff``); it is
            evaluated and differentiated on the base run.
        sweep: a name in :data:`mechscope.patching.SWEEPS`; same axes and shape as ``patch``.
        direction: ``"denoise"`` (clean into corrupted: gradient on the corrupted run) or
            ``"noise"`` (corrupted into clean: gradient on the clean run).
        layer: the layer of the ``neuron`` sweep; the other sweeps cover every layer.
        read_pos: the position each prompt's metric reads (``"last"``: ``batch.last_pos``; a
            [batch] tensor; None: every position): only those are unembedded, in both runs and
            the backward (see ``patch``).

    Returns an :class:`AttributionResult` whose ``values`` are the base run's mean metric plus the
    estimated change, on the same scale as ``patch(...).values``. The deprecated token form
    ``attribution_patch(model, clean_tokens, corrupt_tokens, metric(logits), sweep, ...)`` still
    works.
    """
    pair, (sweep,) = resolve(
        model, batch, (metric, sweep, *legacy), ("sweep",), caller="attribution_patch",
        direction=direction, read_pos=read_pos, attention_mask=attention_mask,
    )  # fmt: skip
    return _sweeps(pair, [sweep], layer)[sweep]
