"""An ensemble of fitted kinds: a Gaussian over their input scores on held-out trusted inputs.

Each member kind already gives every input one score (its token scores combined over layers and
aggregated over tokens). The ensemble reads those scores as a vector, one entry per member
(``confidence``, a probability, through its logit so that 0.999 and 0.9999 differ), fits a mean
and covariance on the held-out trusted inputs the members are calibrated on, and scores an
input by its squared Mahalanobis distance from them. The distance is two-sided (an input is
unusual when a member is unusually high or unusually low, or when members disagree in a way the
trusted inputs never do), and it splits into one term per member (``y_i (P y)_i``), which say
which member drove a flag. Nothing beyond the members' own fits is read: the ensemble is fitted
during calibration and costs no extra forward pass.

With ``combine="sum"`` the score is instead the sum of the members' standardised scores
(``(y_i - mean_i) / std_i`` on the held-out trusted inputs): one-sided, high only when members
are high, each member a term. On the planted backdoors of docs/anomaly.md the sum of `update`
and `confidence` is ahead of both members where the Gaussian falls behind them (the Gaussian
also scores ordinary inputs whose confidence is unusually low).

With ``combine="max"`` the score is the largest of the terms' standardised scores, where a term
is one kind or several joined by ``+`` (``--ensemble mahalanobis,perplexity+attention``): a joined
term is the sum of its kinds' standardised scores, itself standardised on the held-out inputs, so
that every term is on one scale. One-sided, like the sum; an input is flagged when any term is
high, and kinds that see the same shift from two sides (perplexity and the attention profile on
shuffled words) reinforce each other inside their term. The members of the largest term carry
the score (their shares of it), the others zero.

Token scores for display apply the same combination to each token's member scores (with ``mean``
aggregation a token's scores are noisier than the input's mean, so they run higher).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mechscope.errors import MechscopeError

__all__ = [
    "COMBINES",
    "ENSEMBLE",
    "check_combine",
    "check_members",
    "ensemble_scores",
    "ensemble_terms",
    "fit_ensemble",
    "parse_terms",
]

ENSEMBLE = "ensemble"
COMBINES = ("gaussian", "sum", "max")
_PROBABILITIES = ("confidence",)  # members read through their logit
_CLAMP = 1e-6
_RIDGE = 1e-6  # of the mean variance, so that a constant member does not make it singular


def parse_terms(ensemble: tuple[str, ...]) -> tuple[list[str], list[list[int]]]:
    """The member kinds of an ensemble (each once, in order) and its terms as member indices:
    ``("a", "b+c")`` gives ``(["a", "b", "c"], [[0], [1, 2]])``."""
    members: list[str] = []
    terms = []
    for entry in ensemble:
        term = []
        for kind in (k.strip() for k in entry.split("+")):
            if kind in members or not kind:
                raise MechscopeError(
                    f"ensemble {','.join(ensemble)!r} names {kind or 'an empty kind'!r} twice "
                    "or not at all; name each kind once"
                )
            members.append(kind)
            term.append(len(members) - 1)
        terms.append(term)
    return members, terms


def check_members(members: tuple[str, ...], kinds: tuple[str, ...], combine: str) -> None:
    """One-line errors for an ensemble of fewer than two terms, of kinds not fitted, or of
    ``+``-joined terms without ``combine="max"``."""
    if not members:
        return
    flat, terms = parse_terms(members)
    if len(terms) < 2:
        raise MechscopeError(
            f"an ensemble needs at least two different terms, got {','.join(members)}"
        )
    missing = [m for m in flat if m not in kinds]
    if missing:
        raise MechscopeError(
            f"ensemble member {missing[0]!r} is not among the fitted kinds "
            f"({', '.join(kinds)}); add it to --kinds"
        )
    if len(flat) > len(terms) and combine != "max":
        raise MechscopeError(
            f"kinds joined by '+' ({','.join(members)}) form one term of a maximum: use "
            "--ensemble-combine max"
        )


def check_combine(combine: str) -> None:
    if combine not in COMBINES:
        raise MechscopeError(
            f"ensemble_combine must be one of {', '.join(COMBINES)}, got {combine!r}"
        )


def _values(kind: str, scores: Any) -> Tensor:
    x = torch.as_tensor(scores, dtype=torch.float64)
    if kind in _PROBABILITIES:
        return torch.logit(x.clamp(_CLAMP, 1 - _CLAMP))
    return x


def fit_ensemble(
    calibration: dict[str, dict[str, Any]], ensemble: tuple[str, ...], combine: str = "gaussian"
) -> dict:
    """The ensemble's calibration entry from the members' held-out input scores."""
    check_combine(combine)
    members, terms = parse_terms(ensemble)
    y = torch.stack([_values(m, calibration[m]["scores"]) for m in members], -1)
    if y.shape[0] < len(members) + 2:
        raise MechscopeError(
            f"the ensemble needs more than {len(members) + 1} held-out trusted inputs, got "
            f"{y.shape[0]}; pass more trusted text"
        )
    mean = y.mean(0)
    cov = torch.cov(y.T).reshape(len(members), len(members))
    cov += _RIDGE * max(float(torch.diagonal(cov).mean()), 1e-12) * torch.eye(len(members))
    entry = {
        "members": members,
        "terms": terms,
        "combine": combine,
        "mean": mean.tolist(),
        "scale": torch.diagonal(cov).sqrt().tolist(),
        "precision": torch.linalg.inv(cov).tolist(),
        "aggregate": "input",
        "layers": {},
        "layer_scores": {},
    }
    if combine == "max":  # every term standardised on the same held-out inputs
        g = _term_sums(entry, _standardised(entry, y - mean))
        entry["term_mean"] = g.mean(0).tolist()
        entry["term_scale"] = g.std(0).clamp(min=1e-12).tolist()
    held = ensemble_scores(entry, {m: y[:, i] for i, m in enumerate(members)}, raw=False)
    entry["scores"] = held.tolist()
    if not torch.isfinite(held).all():
        raise MechscopeError("the ensemble gave non-finite scores on trusted text")
    return entry


def _standardised(entry: dict, centred: Tensor) -> Tensor:
    """Members' scores [..., members], less their held-out mean, over their held-out spread."""
    return centred / torch.tensor(entry["scale"], dtype=torch.float64).clamp(min=1e-12)


def _term_sums(entry: dict, z: Tensor) -> Tensor:
    """[..., terms]: each term's sum of its members' standardised scores ``z`` [..., members]."""
    return torch.stack([z[..., term].sum(-1) for term in entry["terms"]], -1)


def _max_terms(entry: dict, z: Tensor) -> Tensor:
    """Per-member terms of the largest standardised term: its members' shares, others zero."""
    mean = torch.tensor(entry["term_mean"], dtype=torch.float64)
    scale = torch.tensor(entry["term_scale"], dtype=torch.float64)
    best = ((_term_sums(entry, z) - mean) / scale).argmax(-1)
    out = torch.zeros_like(z)
    for k, term in enumerate(entry["terms"]):
        share = (z[..., term] - mean[k] / len(term)) / scale[k]
        out[..., term] = torch.where((best == k)[..., None], share, out[..., term])
    return out


def ensemble_terms(entry: dict, scores: dict[str, Tensor], raw: bool = True) -> Tensor:
    """Per-member terms [..., members] of the score (they sum to it): of the squared distance,
    with ``combine="sum"`` the standardised scores, with ``"max"`` the largest term's members'
    shares. ``scores`` maps each member to its scores (any shape, the same for all); ``raw``:
    not yet through the member's transform."""
    members = entry["members"]
    y = torch.stack(
        [(_values(m, scores[m]) if raw else scores[m].double()) for m in members], -1
    ) - torch.tensor(entry["mean"], dtype=torch.float64)
    combine = entry.get("combine", "gaussian")
    if combine in ("sum", "max"):
        z = _standardised(entry, y)
        return z if combine == "sum" else _max_terms(entry, z)
    p = torch.tensor(entry["precision"], dtype=torch.float64)
    return y * (y @ p)


def ensemble_scores(entry: dict, scores: dict[str, Tensor], raw: bool = True) -> Tensor:
    """Squared Mahalanobis distances of the members' scores from the trusted inputs' (with
    ``combine="sum"``: the sum of their standardised scores; ``"max"``: the largest term)."""
    return ensemble_terms(entry, scores, raw).sum(-1).float()
