"""``probe``: how well a linear probe reads a label from each site, with a control task.

Steps:

1. load the labelled examples (a :class:`ProbeData`, a JSONL file, ``builtin:NAME`` or rows);
2. harvest the vector at each example's position at every site matching ``site_pattern``, one
   forward per batch of texts (:mod:`mechscope.probes.harvest`);
3. per site: fit the probe on a stratified train split and score the test split (accuracy),
   repeat over ``folds`` stratified folds (``cv_mean``, ``cv_std``), fit the same probe on the
   control task (random labels per token type) with the same split (``control_accuracy``), and
   report ``selectivity = accuracy - control_accuracy`` and the majority-class ``baseline``.

Hewitt & Liang, "Designing and Interpreting Probes with Control Tasks", EMNLP 2019;
Alain & Bengio, "Understanding intermediate layers using linear classifier probes", 2016.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.probes.base import LinearClassifier, accuracy
from mechscope.probes.data import ProbeData, from_rows, read_jsonl
from mechscope.probes.harvest import harvest
from mechscope.probes.linear import fit_linear
from mechscope.probes.logistic import fit_logistic
from mechscope.probes.sets import PROBE_SETS
from mechscope.probes.splits import control_labels, stratified_folds, train_test_split
from mechscope.progress import progress
from mechscope.sites import select_sites

Tensor = torch.Tensor
Fit = Callable[..., LinearClassifier]

PROBES: dict[str, Fit] = {"logistic": fit_logistic, "linear": fit_linear}

__all__ = ["PROBES", "ProbeResult", "SiteScore", "load_probe_data", "probe", "score_site"]


@dataclass(frozen=True)
class SiteScore:
    """A probe's scores at one site (accuracies are fractions of held-out examples)."""

    site: str
    layer: int | None  # the block of the site; None for hook_embed and ln_final sites
    accuracy: float  # on the test split, trained on the train split
    cv_mean: float | None  # mean accuracy over the k folds (None without cross-validation)
    cv_std: float | None  # their standard deviation
    control_accuracy: float | None  # the same probe and split on the control task
    selectivity: float | None  # accuracy - control_accuracy
    baseline: float  # test accuracy of always predicting the train split's majority class


@dataclass(frozen=True, eq=False)
class ProbeResult:
    """Per-site probe scores for one labelled data set."""

    data: str  # the data's name (file or builtin:NAME)
    site: str  # the site pattern asked for
    kind: str  # the probe kind (a key of PROBES)
    classes: tuple[Any, ...]  # the labels, in class-index order
    n_examples: int
    n_train: int
    n_test: int
    scores: tuple[SiteScore, ...]  # in forward order
    settings: dict[str, Any] = field(default_factory=dict)  # folds, seed, weight_decay, ...

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def best(self) -> SiteScore:
        """The site with the highest test accuracy (the earliest one on ties)."""
        return max(self.scores, key=lambda s: s.accuracy)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "data": self.data,
            "site": self.site,
            "kind": self.kind,
            "sites": [vars(s).copy() for s in self.scores],
            "n_examples": self.n_examples,
            "n_classes": self.n_classes,
            "classes": list(self.classes),
            "n_train": self.n_train,
            "n_test": self.n_test,
            **self.settings,
        }


def load_probe_data(data: ProbeData | str | Path | Sequence[dict[str, Any]]) -> ProbeData:
    """``ProbeData`` from itself, ``builtin:NAME``, a JSONL path, or a list of row dicts."""
    if isinstance(data, ProbeData):
        return data
    if isinstance(data, str) and data.startswith("builtin:"):
        name = data.removeprefix("builtin:")
        if name not in PROBE_SETS:
            raise MechscopeError(
                f"unknown built-in probing set {name!r}; choose one of {', '.join(PROBE_SETS)}"
            )
        return PROBE_SETS[name]()
    if isinstance(data, str | Path):
        return read_jsonl(data)
    return from_rows(list(data))


def probe(
    model: HookedModel,
    data: ProbeData | str | Path | Sequence[dict[str, Any]],
    site_pattern: str | Sequence[str] = "blocks.*.hook_resid_post",
    *,
    kind: str = "logistic",
    test_fraction: float = 0.2,
    folds: int = 5,
    seed: int = 0,
    control: bool = True,
    weight_decay: float = 1e-2,
    batch_size: int = 32,
    quiet: bool = False,
) -> ProbeResult:
    """Probe every site matching ``site_pattern`` for the labels of ``data``.

    ``folds=0`` skips cross-validation; ``control=False`` skips the control task.
    """
    if kind not in PROBES:
        raise MechscopeError(f"unknown probe kind {kind!r}; choose one of {', '.join(PROBES)}")
    if weight_decay < 0:
        raise MechscopeError(f"weight_decay must be >= 0, got {weight_decay}")
    examples = load_probe_data(data)
    sites = select_sites(model.sites, site_pattern)
    y = examples.label_ids()
    split = train_test_split(y, test_fraction, seed)
    fold_list = [] if folds == 0 else stratified_folds(y, folds, seed)
    got = harvest(model, examples, sites, batch_size=batch_size, quiet=quiet)
    control_y = control_labels(got.token_ids, y, seed) if control else None
    fit = _bound(PROBES[kind], len(examples.classes), weight_decay)
    scores = []
    for name in progress(sites, desc="probes", unit="site", quiet=quiet):
        x = _finite(got.features.pop(name), name, examples)  # free each site's features once scored
        values = score_site(x, y, split, fold_list, fit, control_y)
        scores.append(SiteScore(site=name, layer=model.sites[name].layer, **values))
    settings = {"folds": folds, "test_fraction": test_fraction, "seed": seed}
    settings |= {"weight_decay": weight_decay, "control": control}
    return ProbeResult(
        data=examples.name,
        site=site_pattern if isinstance(site_pattern, str) else ",".join(site_pattern),
        kind=kind,
        classes=examples.classes,
        n_examples=len(examples),
        n_train=len(split[0]),
        n_test=len(split[1]),
        scores=tuple(scores),
        settings=settings,
    )


def _finite(x: Tensor, site: str, examples: ProbeData) -> Tensor:
    """``x``, or an error naming the first example whose features hold inf or NaN."""
    bad = ~torch.isfinite(x).reshape(x.shape[0], -1).all(-1)
    if bool(bad.any()):
        first = int(bad.nonzero()[0])
        raise MechscopeError(
            f"{site} has inf/NaN activations for {int(bad.sum())} examples (first: "
            f"{examples.where(first)}); load the model in float32"
        )
    return x


def score_site(
    x: Tensor,
    y: np.ndarray,
    split: tuple[np.ndarray, np.ndarray],
    folds: Sequence[np.ndarray],
    fit: Callable[[Tensor, Tensor], LinearClassifier],
    control_y: np.ndarray | None = None,
) -> dict[str, float | None]:
    """Test accuracy, k-fold mean/std, control accuracy, selectivity and baseline at one site."""
    x = x.to(torch.float64)
    labels = torch.from_numpy(y)

    def held_out(train: np.ndarray, test: np.ndarray, target: Tensor) -> float:
        return accuracy(fit(x[train], target[train]), x[test], target[test])

    train, test = split
    acc = held_out(train, test, labels)
    cv = [held_out(np.setdiff1d(np.arange(len(y)), f), f, labels) for f in folds]
    ctrl = None if control_y is None else held_out(train, test, torch.from_numpy(control_y))
    majority = np.bincount(y[train]).argmax()
    return {
        "accuracy": acc,
        "cv_mean": float(np.mean(cv)) if cv else None,
        "cv_std": float(np.std(cv)) if cv else None,
        "control_accuracy": ctrl,
        "selectivity": None if ctrl is None else acc - ctrl,
        "baseline": float(np.mean(y[test] == majority)),
    }


def _bound(fn: Fit, n_classes: int, weight_decay: float) -> Callable[[Tensor, Tensor], Any]:
    return lambda x, y: fn(x, y, n_classes, weight_decay=weight_decay)
