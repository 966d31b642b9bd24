"""Ablation as hooks: the registry :data:`ABLATIONS` and the hook-list builder.

Other analyses (circuit faithfulness, path patching) combine ablations with their own hooks, so
the building block is a hook list, ``ablation_hooks(model, nodes, kind, reference_cache)``:

1. :func:`node_sites` groups the expanded nodes by site: heads at ``blocks.L.attn.hook_z``
   (``[:, :, heads]`` of ``[batch pos head d_head]``), neurons at ``blocks.L.mlp.hook_post``
   (``[:, :, neurons]`` of ``[batch pos d_mlp]``), MLPs at ``blocks.L.hook_mlp_out`` (whole).
2. :func:`reference_cache` runs the reference prompts once, unablated, caching those sites.
3. Each hook computes the ablation kind's values from the reference activation of its site and
   writes them into the nodes' slices only, leaving the rest of the activation as computed.

Every kind in :data:`ABLATIONS` has one signature, ``fn(act, reference, *, mask, seed) -> values``
shaped like ``act``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from mechscope.ablation.mean import mean
from mechscope.ablation.nodes import Node, expand
from mechscope.ablation.resample import resample
from mechscope.ablation.zero import zero
from mechscope.cache import Cache
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel

Tensor = torch.Tensor
AblationFn = Callable[..., Tensor]
Hook = tuple[str, Callable[[Tensor, Any], Tensor]]
Nodes = str | Iterable[str | Node]

ABLATIONS: dict[str, AblationFn] = {"zero": zero, "mean": mean, "resample": resample}
"""Ablation kinds by name: ``fn(act, reference, *, mask=None, seed=0) -> values like act``."""


def check_kind(kind: str) -> AblationFn:
    if kind not in ABLATIONS:
        raise MechscopeError(f"unknown ablation {kind!r}; choose one of {', '.join(ABLATIONS)}")
    return ABLATIONS[kind]


def node_sites(model: HookedModel, nodes: Nodes) -> dict[str, list[int] | None]:
    """``{site: indices along axis 2 (heads or neurons), or None for the whole site}``."""
    sites: dict[str, list[int] | None] = {}
    for node in expand(nodes, model.dims):
        if node.kind == "mlp":
            sites[f"blocks.{node.layer}.hook_mlp_out"] = None
            continue
        name = (
            f"blocks.{node.layer}.attn.hook_z"
            if node.kind == "head"
            else f"blocks.{node.layer}.mlp.hook_post"
        )
        if name not in model.sites:
            raise MechscopeError(
                f"node {node}: this {model.family.name} model has no site {name}; "
                "ablate the whole MLP (MLPx) instead"
            )
        indices = sites.setdefault(name, [])
        assert indices is not None
        indices.append(node.index)  # type: ignore[arg-type]
    return sites


def reference_cache(
    model: HookedModel, nodes: Nodes, tokens: Tensor, attention_mask: Tensor | None = None
) -> Cache:
    """The unablated activations of the reference prompts at the sites ``nodes`` ablate."""
    names = list(node_sites(model, nodes))
    if not names:
        return Cache()
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names, attention_mask)
    return cache


def _hook(fn: AblationFn, ref: Tensor | None, index: list[int] | None, **kw: Any) -> Callable:
    def hook(act: Tensor, _hook: Any) -> Tensor:
        values = fn(act, ref, **kw)
        if index is None:
            return values.clone()
        out = act.clone()
        out[:, :, index] = values[:, :, index]
        return out

    return hook


def ablation_hooks(
    model: HookedModel,
    nodes: Nodes,
    kind: str = "zero",
    reference_cache: Cache | None = None,
    *,
    reference_mask: Tensor | None = None,
    seed: int | None = 0,
) -> list[Hook]:
    """Forward hooks ``[(site, fn)]`` that ablate ``nodes``; pass them to ``model.hooks``.

    ``reference_cache`` (from :func:`reference_cache`) is needed by ``mean`` and ``resample``;
    ``reference_mask`` [ref pos] marks its real tokens for ``mean``.
    """
    fn = check_kind(kind)
    hooks: list[Hook] = []
    for name, index in node_sites(model, nodes).items():
        ref = None
        if kind != "zero":
            if reference_cache is None:
                raise MechscopeError(f"{kind} ablation needs a reference cache; build one first")
            ref = reference_cache[name]
        hooks.append((name, _hook(fn, ref, index, mask=reference_mask, seed=seed)))
    return hooks


@contextmanager
def ablated(
    model: HookedModel,
    nodes: Nodes,
    kind: str = "zero",
    reference_cache: Cache | None = None,
    *,
    reference_mask: Tensor | None = None,
    seed: int | None = 0,
) -> Iterator[HookedModel]:
    """``with ablated(model, "L9H*", "mean", cache): model(tokens)`` runs with the nodes ablated."""
    hooks = ablation_hooks(
        model, nodes, kind, reference_cache, reference_mask=reference_mask, seed=seed
    )
    with model.hooks(hooks):
        yield model
