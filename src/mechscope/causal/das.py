"""Distributed alignment search (DAS; Geiger, Wu, Potts, Icard, Goodman 2024) and interchange
intervention accuracy (IIA).

DAS learns an orthogonal rotation ``Q [d d]`` of a site (``torch.nn.utils.parametrizations.
orthogonal``, as pyvene's ``RotateLayer``) such that swapping the first ``k`` rotated coordinates
from a source run makes the model output the high-level causal model's counterfactual label:

1. the source runs' activations at the site and positions are computed once (the model is frozen);
2. each step takes a minibatch of pairs, intervenes ``h' = h + (h_src - h) R R^T`` with
   ``R = Q[:, :k]`` (:func:`mechscope.causal.subspace.swap`) and minimises the cross-entropy of the
   logits at each base's last position against the counterfactual label (Adam on ``Q`` only);
   for residual-stream sites the base's residual is cached and only the layers after the site run
   (:meth:`HookedModel.run_from`), elsewhere the whole base forward runs with a hook;
3. boundless DAS (Wu et al. 2023, "Interpretability at scale") learns the subspace size too:
   coordinate ``i`` of the rotated space is swapped by a soft mask
   ``m_i = sigmoid((b d - i - 0.5) / t)`` with the boundary ``b = (1 + (d - 1) sigmoid(r)) / d``
   in ``[1/d, 1]`` learned through ``r`` (at least one coordinate, a gradient everywhere), the
   temperature ``t`` annealed from 50 to 0.1, and a penalty ``size_weight * b`` on the loss;
4. IIA is the fraction of held-out pairs whose intervened argmax is the label.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mechscope.causal.data import Counterfactuals
from mechscope.causal.subspace import (
    check_basis,
    gather,
    random_basis,
    scatter,
    site_size,
    source_values,
    swap,
)
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.progress import progress

Tensor = torch.Tensor


class Rotation(nn.Module):
    """An orthogonal ``d x d`` matrix (orthogonal parametrisation); ``basis`` is its first k columns.

    ``boundless=True`` adds a learned boundary: :meth:`mask` is the soft choice of coordinates.
    """

    def __init__(
        self, d: int, k: int, *, boundless: bool = False, seed: int = 0, init: Tensor | None = None
    ) -> None:
        super().__init__()
        if not 1 <= k <= d:
            raise MechscopeError(f"subspace of {k} dimensions does not fit in {d}; choose 1..{d}")
        g = torch.Generator().manual_seed(seed)
        start = torch.randn(d, d, generator=g)
        if init is not None:  # a given first k columns, completed to an orthogonal matrix
            check_basis(init, d, "the rotation")
            start[:, : init.shape[1]] = init
        q, r = torch.linalg.qr(start)
        q = q * torch.sign(r.diagonal())  # keep the given columns' signs
        linear = nn.Linear(d, d, bias=False)
        with torch.no_grad():
            linear.weight.copy_(q)
        self.linear = nn.utils.parametrizations.orthogonal(linear)
        self.d, self.k, self.boundless = d, k, boundless
        # boundless: the boundary b = (1 + (d - 1) sigmoid(raw)) / d lies in [1/d, 1] with a
        # gradient everywhere (see ``mask``); ``raw`` starts where b = k / d
        start_b = min(max((k - 1) / max(d - 1, 1), 1e-4), 1 - 1e-4)
        raw = torch.logit(torch.tensor(start_b))
        self.boundary = nn.Parameter(raw) if boundless else None
        self.temperature = 50.0

    @property
    def weight(self) -> Tensor:
        return self.linear.weight

    def basis(self) -> Tensor:
        """``[d k]``: the learned subspace (boundless: the coordinates with mask > 0.5)."""
        k = self.size() if self.boundless else self.k
        return self.weight[:, :k]

    def size(self) -> int:
        if self.boundary is None:
            return self.k
        return max(1, int((self.mask() > 0.5).sum()))

    def fraction(self) -> Tensor:
        """Boundless: the boundary as a fraction of ``d``, at least one coordinate."""
        assert self.boundary is not None
        return (1 + (self.d - 1) * torch.sigmoid(self.boundary)) / self.d

    def mask(self) -> Tensor:
        """``m_i = sigmoid((b d - i - 0.5) / t)``: coordinate 0 is kept (``b d >= 1``) and never
        fades out, however hard the size penalty pushes (a clamped boundary used to get stuck below
        its floor with no gradient, and the annealed mask then switched off every coordinate)."""
        i = torch.arange(self.d, dtype=self.weight.dtype)
        return torch.sigmoid((self.fraction() * self.d - i - 0.5) / self.temperature)

    def forward(self, base: Tensor, source: Tensor) -> Tensor:
        """``base [... d]`` with the subspace taken from ``source``."""
        if self.boundary is None:
            return swap(base, source, self.basis())
        w = self.weight.to(base.dtype)
        return base + (((source - base) @ w) * self.mask().to(base.dtype)) @ w.T


@dataclass(frozen=True)
class DASConfig:
    """Training settings (each documented); ``k`` is the subspace size (boundless: the start)."""

    k: int = 1
    steps: int = 200  # optimiser steps
    batch_size: int = 64
    lr: float = 1e-2
    boundless: bool = False
    size_weight: float = 0.5  # boundless: penalty on the boundary fraction
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1 or self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise MechscopeError("k, steps and batch_size must be >= 1 and lr > 0")


@dataclass(frozen=True)
class DASResult:
    """A learned subspace: ``basis [d k]``, the IIA on the training and held-out pairs.

    Fixed bases use the same record (``method``: ``"pca"``, the difference PCA, with no training
    IIA; ``"full"``, the whole vector, ``basis`` None and ``k = d``)."""

    site: str
    positions: list[int] | list[str] | str
    k: int
    basis: Tensor | None
    train_iia: float | None
    test_iia: float
    test_correct: Tensor  # [pair] bool, held-out pairs (for intervals)
    losses: list[float] = field(default_factory=list)
    fit_seconds: float = 0.0  # wall time of the optimiser steps
    fit_cpu_seconds: float = 0.0  # process CPU time of the optimiser steps
    method: str = "das"  # das | pca | full

    def to_dict(self) -> dict[str, Any]:
        from mechscope.stats import bootstrap_ci

        few = len(self.test_correct) < 2  # no interval from one pair
        ci = None if few else list(bootstrap_ci(self.test_correct.float()))
        return {
            "method": self.method,
            "site": self.site,
            "positions": self.positions,
            "k": self.k,
            "train_iia": self.train_iia,
            "test_iia": self.test_iia,
            "test_iia_ci": ci,
            "n_test": len(self.test_correct),
            "losses": self.losses,
            "fit_seconds": self.fit_seconds,
            "fit_cpu_seconds": self.fit_cpu_seconds,
        }


class Runner:
    """One site and set of positions over one dataset: cached source values (and, for residual
    sites, cached base residuals) so that each intervened forward runs only what it must.

    ``acts``: the base and source activations ``[pair pos ...]`` at the site when the caller
    already has them (a sweep caches every site in one run of each), instead of two runs here."""

    def __init__(
        self,
        model: HookedModel,
        data: Counterfactuals,
        site: str,
        positions: Any,
        acts: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        self.model, self.data, self.site = model, data, site
        self.d = site_size(model, site)
        self.pos = data.resolve(positions)  # [pair npos]
        if acts is None:
            self.values = source_values(model, data.source, site, self.pos, data.mask)
        else:
            self.values = gather(acts[1], self.pos)
        self.layer = _resid_layer(model, site) if data.mask is None else None
        if self.layer is not None:
            with torch.no_grad(), model.capture_inputs() as inputs:
                model(data.base[:1])
            self.inputs = inputs
            if acts is None:
                self.resid = model(data.base, stop_at_layer=self.layer).detach()
            else:
                self.resid = acts[0]

    def logits(self, index: Tensor, swap_fn: Any) -> Tensor:
        """``[rows d_vocab]``: last-position logits of the bases ``index`` with ``swap_fn(h, src)``
        applied at the site and positions."""
        d, pos, values = self.data, self.pos[index], self.values[index]
        rows = torch.arange(len(index))
        if self.layer is not None:
            h = self.resid[index]
            h = scatter(h, pos, swap_fn(gather(h, pos), values))
            out = self.model.run_from(h, self.layer, self.inputs, logits=False)
            last = out[rows, d.read_pos[index]][:, None]
            return self.model.run_from(last, self.model.dims.n_layers, self.inputs)[:, 0]

        def hook(acts: Tensor, _hook: Any) -> Tensor:
            return scatter(acts, pos, swap_fn(gather(acts, pos), values.to(acts.dtype)))

        mask = None if d.mask is None else d.mask[index]
        with self.model.hooks([(self.site, hook)]):
            logits = self.model(d.base[index], mask, read_pos=d.read_pos[index])
        return logits[rows, d.read_pos[index]]

    def correct(self, swap_fn: Any, batch_size: int = 256) -> Tensor:
        """``[pair]`` bool: the intervened argmax equals the counterfactual label."""
        out = []
        with torch.no_grad():
            for start in range(0, len(self.data), batch_size):
                index = torch.arange(start, min(len(self.data), start + batch_size))
                out.append(self.logits(index, swap_fn).argmax(-1) == self.data.label[index])
        return torch.cat(out)


def _resid_layer(model: HookedModel, site: str) -> int | None:
    """The layer whose input is this residual site (None: not a residual-stream site)."""
    parts = site.split(".")
    if len(parts) != 3 or parts[0] != "blocks":
        return None
    layer = int(parts[1])
    if parts[2] == "hook_resid_pre":
        return layer
    if parts[2] == "hook_resid_post" and layer + 1 < model.dims.n_layers:
        return layer + 1
    return None


def describe(positions: Any) -> list[int] | list[str] | str:
    """Positions as JSON: a name, a list of names, or a flat list of ints."""
    if isinstance(positions, str):
        return positions
    if isinstance(positions, (list, tuple)) and all(isinstance(v, str) for v in positions):
        return list(positions)
    return list(torch.as_tensor(positions).reshape(-1).tolist())


def difference_basis(
    model: HookedModel,
    data: Counterfactuals,
    site: str,
    positions: Any,
    k: int,
    acts: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """``[d k]``: the top ``k`` right singular vectors (uncentred PCA) of the pairs' source - base
    activation differences at ``site`` and ``positions``: the directions along which the pairs
    differ most: a fixed basis, no training. ``acts`` as for :class:`Runner`."""
    pos = data.resolve(positions)
    if acts is None:
        base = source_values(model, data.base, site, pos, data.mask)
        diff = source_values(model, data.source, site, pos, data.mask) - base
    else:
        diff = gather(acts[1], pos) - gather(acts[0], pos)
    diff = diff.flatten(0, 1).double()
    if not 1 <= k <= min(diff.shape):
        raise MechscopeError(
            f"a difference basis of {k} directions needs k in [1, {min(diff.shape)}] for "
            f"{diff.shape[0]} differences of size {diff.shape[1]}; lower k or add pairs"
        )
    _, _, v = torch.linalg.svd(diff, full_matrices=False)
    return v[:k].T.float().contiguous()


def iia(
    model: HookedModel,
    data: Counterfactuals,
    site: str,
    positions: Any,
    basis: Tensor | None,
    acts: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """``[pair]`` bool: each pair's interchange intervention gives the counterfactual label
    (``acts`` as for :class:`Runner`)."""
    run = Runner(model, data, site, positions, acts)
    check_basis(basis, run.d, site)
    return run.correct(lambda h, s: swap(h, s, basis))


def random_control(
    model: HookedModel, test: Counterfactuals, result: DASResult, seed: int = 0
) -> dict[str, Any]:
    """The shuffled control of a found subspace: a seeded random orthonormal subspace of the same
    size at the same site and positions, on the same held-out pairs. ``p_vs_random`` is the paired
    permutation p-value that the found subspace and the random one give the counterfactual label
    equally often (each pair's two outcomes swapped at random,
    :func:`mechscope.stats.signflip_pvalues`)."""
    from mechscope.stats import bootstrap_ci, signflip_pvalues

    if result.basis is None:
        raise MechscopeError("the whole vector has no random control of its size; use das or pca")
    rand = iia(model, test, result.site, result.positions,
               random_basis(site_size(model, result.site), result.k, seed))  # fmt: skip
    diff = (result.test_correct.double() - rand.double()).numpy()
    many = len(rand) > 1
    return {
        "method": "random",
        "k": result.k,
        "seed": seed,
        "test_iia": float(rand.float().mean()),
        "test_iia_ci": list(bootstrap_ci(rand.float())) if many else None,
        "p_vs_random": signflip_pvalues(diff) if many else None,
    }


def train_das(
    model: HookedModel,
    train: Counterfactuals,
    test: Counterfactuals,
    site: str,
    positions: int | Sequence[int] | str = "last",
    config: DASConfig = DASConfig(),
    *,
    init: Tensor | None = None,
    quiet: bool = True,
) -> DASResult:
    """Learn a ``config.k``-dimensional subspace of ``site`` at ``positions`` (see the module);
    ``init`` ``[d k]`` starts from a given subspace (default: a seeded random rotation)."""
    run = Runner(model, train, site, positions)
    if config.k > run.d:
        raise MechscopeError(
            f"subspace of {config.k} dimensions is larger than site {site!r} ({run.d} values per "
            f"position); choose k <= {run.d}"
        )
    rot = Rotation(run.d, config.k, boundless=config.boundless, seed=config.seed, init=init)
    start, cpu = time.perf_counter(), time.process_time()
    losses = _fit(run, rot, config, quiet)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    with torch.no_grad():
        basis = rot.basis().detach().clone()
    fixed = lambda h, s: swap(h, s, basis)  # noqa: E731
    test_correct = Runner(model, test, site, positions).correct(fixed)
    return DASResult(
        site=site,
        positions=describe(positions),
        k=basis.shape[1],
        basis=basis,
        train_iia=float(run.correct(fixed).float().mean()),
        test_iia=float(test_correct.float().mean()),
        test_correct=test_correct,
        losses=losses,
        fit_seconds=seconds,
        fit_cpu_seconds=cpu,
    )


def _fit(run: Runner, rot: Rotation, config: DASConfig, quiet: bool) -> list[float]:
    params = [p for p in run.model.hf.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    groups: list[dict[str, Any]] = [{"params": list(rot.linear.parameters()), "lr": config.lr}]
    if rot.boundary is not None:  # one scalar that must cross many coordinates: a faster rate
        groups.append({"params": [rot.boundary], "lr": 5 * config.lr})
    opt = torch.optim.Adam(groups)
    g = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    n = len(run.data)
    try:
        for step in progress(range(config.steps), desc="DAS", quiet=quiet):
            index = torch.randint(n, (min(config.batch_size, n),), generator=g)
            if rot.boundary is not None:
                rot.temperature = 50.0 * (0.1 / 50.0) ** (step / max(1, config.steps - 1))
            logits = run.logits(index, rot)
            loss = nn.functional.cross_entropy(logits.float(), run.data.label[index])
            if rot.boundary is not None:
                loss = loss + config.size_weight * rot.fraction()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    finally:
        for p in params:
            p.requires_grad_(True)
    return losses
