"""Interchange interventions on a subspace of one site (Geiger et al., "Finding alignments between
interpretable causal variables and distributed neural representations", 2024).

At site ``s`` and positions ``P``, the base run's activation ``h`` is replaced by

    h' = h + (h_src - h) R R^T          R [d k], orthonormal columns

where ``h_src`` is the source run's activation at the same site and positions and ``d`` the site's
size (trailing axes flattened: ``d_model`` for the residual stream, ``head * d_head`` for
``attn.hook_z``). In the rotated coordinates ``y = h Q`` of a full orthogonal ``Q = [R R_perp]``
this sets the first ``k`` coordinates to the source's and keeps the rest: pyvene's
``RotatedSpaceIntervention``. ``R = None`` swaps the whole vector (activation patching).

A basis can be fixed (:func:`pca_basis` of the site's activations, :func:`direction_basis` of
probe, SAE or DLA directions, :func:`random_basis`) or learned (:mod:`mechscope.causal.das`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel

Tensor = torch.Tensor
Positions = int | Sequence[int] | Tensor  # one position, a list for every prompt, or [batch npos]


def site_size(model: HookedModel, site: str) -> int:
    """``d``: the number of values per position at ``site`` (trailing axes multiplied)."""
    if site not in model.sites:
        near = [s for s in model.sites if s.split(".")[-1] == site.split(".")[-1]][:3]
        raise MechscopeError(f"unknown site {site!r}; valid sites look like {', '.join(near)}")
    shape = model.sites[site].shape(model.dims)[2:]
    size = 1
    for n in shape:
        size *= int(n)
    return size


def check_basis(basis: Tensor | None, d: int, site: str) -> None:
    """A basis is ``[d k]`` with ``1 <= k <= d``; one line naming the problem otherwise."""
    if basis is None:
        return
    if basis.ndim != 2 or basis.shape[1] < 1:
        raise MechscopeError(f"a basis must be [d k] with k >= 1, got {tuple(basis.shape)}")
    if basis.shape[1] > d:
        raise MechscopeError(
            f"subspace of {basis.shape[1]} dimensions is larger than site {site!r} ({d} values "
            f"per position); choose k <= {d}"
        )
    if basis.shape[0] != d:
        raise MechscopeError(
            f"basis has {basis.shape[0]} rows but site {site!r} has {d} values per position; "
            "build it from this site's activations"
        )


def check_pair(base: Tensor, source: Tensor) -> None:
    """Base and source token ids ``[batch pos]`` of one shape (interventions align positions)."""
    if base.ndim != 2 or base.shape != source.shape:
        raise MechscopeError(
            f"counterfactual pair tokenisations differ in length ({tuple(base.shape)} vs "
            f"{tuple(source.shape)}); pick base and source prompts with the same number of tokens"
        )


def position_index(positions: Positions, batch: int, n_pos: int) -> Tensor:
    """Positions as a ``[batch npos]`` long tensor, checked against the prompt length."""
    pos = torch.as_tensor(positions, dtype=torch.long)
    if pos.ndim == 0:
        pos = pos.reshape(1)
    if pos.ndim == 1:
        pos = pos[None].expand(batch, -1)
    if pos.ndim != 2 or pos.shape[0] != batch or pos.shape[1] == 0:
        raise MechscopeError(
            f"positions must be an int, a list, or [batch npos] with batch={batch}, got "
            f"{tuple(pos.shape)}"
        )
    pos = torch.where(pos < 0, pos + n_pos, pos)
    if bool((pos < 0).any()) or bool((pos >= n_pos).any()):
        raise MechscopeError(f"positions must lie in [-{n_pos}, {n_pos}), got {positions}")
    return pos


def gather(acts: Tensor, pos: Tensor) -> Tensor:
    """``acts [batch pos ...]`` at ``pos [batch npos]``, flattened: ``[batch npos d]``."""
    rows = torch.arange(acts.shape[0], device=acts.device)[:, None]
    return acts[rows, pos.to(acts.device)].flatten(2)


def swap(base: Tensor, source: Tensor, basis: Tensor | None) -> Tensor:
    """``base + (source - base) R R^T`` over the last axis (all of ``source`` when R is None)."""
    if basis is None:
        return source
    r = basis.to(base.dtype)
    return base + ((source - base) @ r) @ r.T


def scatter(acts: Tensor, pos: Tensor, values: Tensor) -> Tensor:
    """A copy of ``acts [batch pos ...]`` with ``values [batch npos d]`` written at ``pos``."""
    rows = torch.arange(acts.shape[0], device=acts.device)[:, None]
    out = acts.clone()
    out[rows, pos.to(acts.device)] = values.reshape(*values.shape[:2], *acts.shape[2:])
    return out


def source_values(
    model: HookedModel, source: Tensor, site: str, pos: Tensor, mask: Tensor | None = None
) -> Tensor:
    """The source run's activations at ``site`` and ``pos``: ``[batch npos d]`` (no gradients)."""
    with torch.no_grad():
        _, cache = model.run_with_cache(source, [site], mask, stop_at_layer=_stop(model, site))
    return gather(cache[site], pos)


def _stop(model: HookedModel, site: str) -> int | None:
    layer = model.sites[site].layer
    return None if layer is None or layer + 1 >= model.dims.n_layers else layer + 1


def interchange(
    model: HookedModel,
    base: Tensor,
    source: Tensor,
    site: str,
    positions: Positions,
    basis: Tensor | None = None,
    *,
    mask: Tensor | None = None,
    source_positions: Positions | None = None,
) -> Tensor:
    """Logits ``[batch pos d_vocab]`` of the base run with the subspace ``basis`` of ``site`` at
    ``positions`` taken from the source run (``source_positions``: where to read it, default the
    same positions). Gradients flow into ``basis`` when it requires them."""
    check_pair(base, source)
    check_basis(basis, site_size(model, site), site)
    pos = position_index(positions, base.shape[0], base.shape[1])
    src_pos = pos if source_positions is None else position_index(source_positions, *base.shape)
    if src_pos.shape != pos.shape:
        raise MechscopeError("source_positions must name as many positions as positions")
    values = source_values(model, source, site, src_pos, mask)
    return run_swapped(model, base, site, pos, values, basis, mask)


def run_swapped(
    model: HookedModel,
    base: Tensor,
    site: str,
    pos: Tensor,
    values: Tensor,
    basis: Tensor | None,
    mask: Tensor | None = None,
) -> Tensor:
    """Logits of the base run with ``swap(h, values, basis)`` written at ``site`` and ``pos``."""

    def hook(acts: Tensor, _hook: Any) -> Tensor:
        return scatter(acts, pos, swap(gather(acts, pos), values.to(acts.dtype), basis))

    with model.hooks([(site, hook)]):
        return model(base, mask)


def orthonormal(vectors: Tensor) -> Tensor:
    """An orthonormal basis ``[d k]`` of the span of ``vectors [k d]`` (QR; rank-deficient fails)."""
    if vectors.ndim == 1:
        vectors = vectors[None]
    q, r = torch.linalg.qr(vectors.double().T)
    if bool((r.diagonal().abs() < 1e-8 * r.abs().max().clamp(min=1e-30)).any()):
        raise MechscopeError("the directions are linearly dependent; give independent directions")
    return q.float()


def direction_basis(directions: Tensor) -> Tensor:
    """The basis spanned by fixed directions ``[k d]`` (a probe's weights, SAE decoder rows, a DLA
    direction such as an unembedding difference)."""
    return orthonormal(directions)


def pca_basis(acts: Tensor, k: int) -> Tensor:
    """The top ``k`` principal directions ``[d k]`` of activations ``[n d]`` (centred)."""
    acts = acts.reshape(-1, acts.shape[-1]).double()
    if not 1 <= k <= min(acts.shape):
        raise MechscopeError(f"k must lie in [1, {min(acts.shape)}] for PCA of {tuple(acts.shape)}")
    _, _, v = torch.linalg.svd(acts - acts.mean(0), full_matrices=False)
    return v[:k].T.float().contiguous()


def random_basis(d: int, k: int, seed: int = 0) -> Tensor:
    """A uniformly random ``k``-dimensional subspace of ``R^d`` as ``[d k]`` (seeded)."""
    if not 1 <= k <= d:
        raise MechscopeError(f"subspace of {k} dimensions does not fit in {d}; choose 1 <= k <= d")
    g = torch.Generator().manual_seed(seed)
    return orthonormal(torch.randn(k, d, generator=g, dtype=torch.float64).float())
