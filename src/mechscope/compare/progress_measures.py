"""Progress measures over training checkpoints of the modular-addition toy (Nanda et al. 2023).

For each checkpoint of :mod:`mechscope.toys.grokking`:

1. key frequencies: the embedding of the ``p`` number tokens, ``W_E [p d]``, in the Fourier basis
   of ``Z_p`` (constant, then ``cos(w_k a)``, ``sin(w_k a)`` for ``k = 1 .. (p-1)/2``,
   ``w_k = 2 pi k / p``, each unit-norm); the norm of each frequency's two rows, and the
   frequencies holding most of the non-constant norm (the key frequencies of the final model);
2. the logits of every input ``(a, b)`` at ``=``, ``[p p p]``; for each output ``c``, their
   projection on ``cos(w_k (a + b))`` and ``sin(w_k (a + b))`` (functions of ``(a, b)``) for the
   key frequencies ``k``;
3. restricted loss: test loss of the mean over ``(a, b)`` plus those projections only (the
   algorithm the model ends with, alone); excluded loss: training loss of the logits minus those
   projections (what the model does without that algorithm);
4. the three phases: memorisation (train loss falls, test loss does not), circuit formation
   (train loss low; excluded loss rises and restricted loss falls while the test loss stays high),
   cleanup (test loss falls: the model groks). ``phases`` finds the epochs where training
   accuracy first reaches 99% and where test accuracy does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from mechscope.errors import MechscopeError
from mechscope.progress import progress
from mechscope.toys.grokking import GrokConfig, dataset, load_checkpoint

__all__ = [
    "ProgressMeasures",
    "fourier_basis",
    "frequency_norms",
    "key_frequencies",
    "progress_measures",
    "restricted_excluded",
]


def fourier_basis(p: int) -> Tensor:
    """``[p p]`` orthonormal rows: constant, then cos and sin of each frequency 1..(p-1)/2."""
    a = torch.arange(p, dtype=torch.float64)
    rows = [torch.ones(p, dtype=torch.float64)]
    for k in range(1, (p - 1) // 2 + 1):
        rows += [torch.cos(2 * math.pi * k * a / p), torch.sin(2 * math.pi * k * a / p)]
    basis = torch.stack(rows)
    return basis / basis.norm(dim=1, keepdim=True)


def frequency_norms(w_e: Tensor) -> Tensor:
    """``[(p-1)//2]``: the norm of each frequency's cos and sin rows of ``w_e [p d]`` in the
    Fourier basis (the constant term left out)."""
    p = w_e.shape[0]
    coeffs = fourier_basis(p) @ w_e.double()  # [p d]
    pairs = coeffs[1 : 1 + 2 * ((p - 1) // 2)].view(-1, 2, w_e.shape[1])
    return pairs.pow(2).sum((1, 2)).sqrt()


def key_frequencies(norms: Tensor, share: float = 0.8) -> list[int]:
    """The fewest frequencies (1-based) whose squared norms hold ``share`` of the total."""
    sq = norms.pow(2)
    order = sq.argsort(descending=True)
    cumulative = sq[order].cumsum(0) / sq.sum().clamp_min(1e-30)
    n = int((cumulative < share).sum()) + 1
    return sorted((order[:n] + 1).tolist())


def _projection(logits: Tensor, p: int, freqs: list[int]) -> Tensor:
    """The part of ``logits [p p p]`` (a, b, c) along cos/sin(w_k (a + b)) for ``freqs``."""
    a = torch.arange(p, dtype=torch.float64)
    s = (a[:, None] + a[None, :]).reshape(-1)  # a + b over (a, b)
    flat = logits.double().reshape(p * p, p)
    out = torch.zeros_like(flat)
    for k in freqs:
        for fn in (torch.cos, torch.sin):
            u = fn(2 * math.pi * k * s / p)
            u = u / u.norm()
            out += u[:, None] * (u @ flat)[None, :]
    return out.reshape(p, p, p)


def restricted_excluded(
    logits: Tensor, labels: Tensor, train: Tensor, freqs: list[int]
) -> tuple[float, float]:
    """(restricted loss on the test set, excluded loss on the training set) of ``logits
    [p*p p]`` (rows ``a * p + b``) for the key frequencies ``freqs``."""
    p = logits.shape[-1]
    part = _projection(logits.view(p, p, p), p, freqs).reshape(p * p, p)
    mean = logits.double().mean(0, keepdim=True)
    restricted = F.cross_entropy((mean + part)[~train], labels[~train])
    excluded = F.cross_entropy((logits.double() - part)[train], labels[train])
    return float(restricted), float(excluded)


@dataclass
class ProgressMeasures:
    """One row per checkpoint; ``key`` the key frequencies of the last checkpoint."""

    epochs: list[int]
    train_loss: list[float]
    test_loss: list[float]
    restricted_loss: list[float]
    excluded_loss: list[float]
    weight_norm: list[float]
    frequency_norms: list[list[float]]
    key: list[int]

    def phases(self, train_acc: list[float], test_acc: list[float]) -> dict[str, int | None]:
        """Epochs where memorisation ends (train accuracy >= 99%) and grokking ends (test)."""

        def first(values: list[float]) -> int | None:
            return next((e for e, v in zip(self.epochs, values, strict=True) if v >= 0.99), None)

        return {"memorised": first(train_acc), "grokked": first(test_acc)}

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@torch.no_grad()
def progress_measures(
    folder: str | Path, cfg: GrokConfig, *, share: float = 0.8, quiet: bool = False
) -> ProgressMeasures:
    """The measures at every checkpoint of a :func:`~mechscope.toys.grokking.train_grokking`
    run, with the key frequencies of its last checkpoint."""
    paths = sorted((Path(folder) / "checkpoints").glob("epoch-*.safetensors"))
    if not paths:
        raise MechscopeError(f"{folder} has no checkpoints; train with mechscope toy grokking")
    tokens, labels, train = dataset(cfg)
    last = load_checkpoint(paths[-1], cfg)
    key = key_frequencies(frequency_norms(last.W_E[: cfg.p]), share)
    m = ProgressMeasures([], [], [], [], [], [], [], key)
    for path in progress(paths, desc="progress measures", quiet=quiet):
        model = load_checkpoint(path, cfg)
        logits = model(tokens)
        losses = F.cross_entropy(logits, labels, reduction="none")
        restricted, excluded = restricted_excluded(logits, labels, train, key)
        m.epochs.append(int(path.stem.split("-")[1]))
        m.train_loss.append(float(losses[train].mean()))
        m.test_loss.append(float(losses[~train].mean()))
        m.restricted_loss.append(restricted)
        m.excluded_loss.append(excluded)
        m.weight_norm.append(float(sum(p.pow(2).sum() for p in model.parameters()).sqrt()))
        m.frequency_norms.append(frequency_norms(model.W_E[: cfg.p]).tolist())
    return m
