"""Crosscoders: one dictionary over a base model's and its finetune's activations at a layer
(Lindsey et al. 2024, "Sparse crosscoders"; Minder et al. 2025, "Overcoming sparsity artifacts in
crosscoders to interpret chat-tuning").

A crosscoder here is a sparse dictionary (:mod:`mechscope.sae`) over the concatenation
``[x_base | x_finetuned]`` (``d_in = 2 d_model``, each half scaled by its own factor: unit mean
squared norm of its rows minus their mean): the encoder reads both models, and each decoder row ``W_dec[j]`` splits into one
decoder per model, ``d_j^base = W_dec[j, :d]`` and ``d_j^ft = W_dec[j, d:]``. Training is the SAE
trainer's (:func:`mechscope.sae.fit`: checkpoints, resume, lock) and the folder is SAELens's
layout plus ``crosscoder.json``, so a crosscoder loads with :func:`mechscope.sae.load_sae`.

Two variants:

- ``l1`` (Lindsey et al.): ReLU latents and the penalty ``sum_j f_j (|d_j^base| + |d_j^ft|)``, an
  L1 across models that favours latents living in one model only;
- ``batchtopk`` (Minder et al.): BatchTopK latents (``k`` per token on average), decoder rows at
  unit norm jointly over both halves (Minder et al. weight the selection by the sum of the two
  norms instead).

Reading it: the relative decoder norm ``Delta_j = 0.5 ((|d_j^ft| - |d_j^base|) / max(...) + 1)``
puts latents in base-only (< 0.1), finetune-only (> 0.9) and shared (0.4 to 0.6). Latent scaling
checks a finetune-only latent: ``beta^m = <f_j d_j^ft, y^m> / |f_j d_j^ft|^2`` over tokens, for
``y^m`` model ``m``'s reconstruction error with the latent's own part added back (``nu_eps``: the
base carries the direction but the dictionary shrank its base decoder, "Complete Shrinkage") or
model ``m``'s reconstruction less ``b_dec`` (``nu_r``: other latents carry it in the base,
"Latent Decoupling"); ``nu = beta^base / beta^ft`` near 0 means the base model does not
carry the latent (truly finetune-only), near 1 that the split is an artifact of sparsity.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope import stats
from mechscope.errors import MechscopeError
from mechscope.sae.base import SAE, SAEConfig, SAEOutput
from mechscope.sae.relu import ReluSAE

__all__ = [
    "ARCHS",
    "CrosscoderInfo",
    "L1Crosscoder",
    "classify",
    "crosscoder_readout",
    "decoder_norms",
    "latent_scaling",
    "make_crosscoder",
    "relative_norms",
]

ARCHS = ("l1", "batchtopk")
INFO_FILE = "crosscoder.json"
BANDS = {"base-only": (0.0, 0.1), "shared": (0.4, 0.6), "finetune-only": (0.9, 1.0)}


class L1Crosscoder(ReluSAE):
    """A ReLU dictionary whose L1 penalty weights each latent by the sum of its two decoder norms.

    Its config says ``relu``: at inference it is a ReLU SAE over the concatenation, which is what
    :func:`mechscope.sae.save_sae` writes and :func:`mechscope.sae.load_sae` reads back.
    """

    def penalties(
        self, out: SAEOutput, residual: Tensor, dead: Tensor | None, coef_scale: float = 1.0
    ) -> dict[str, Tensor]:
        norms = decoder_norms(self).sum(-1)  # [d_sae]
        l1 = (out.latents * norms).sum(-1).mean()
        return {"l1_loss": self.coefficient.to(l1.dtype) * coef_scale * l1}


@dataclass(frozen=True)
class CrosscoderInfo:
    """What ``crosscoder.json`` records beside the SAELens files."""

    variant: str  # l1 or batchtopk
    d_model: int
    layer: int
    hook_name: str
    scale_base: float  # x_base * scale_base is the first half of the input
    scale_finetuned: float
    base: str = ""
    finetuned: str = ""

    def save(self, folder: str | Path) -> None:
        from mechscope.files import write_atomic

        write_atomic(Path(folder) / INFO_FILE, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> CrosscoderInfo:
        path = Path(folder) / INFO_FILE
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise MechscopeError(
                f"{path} is missing or damaged ({exc}); train the crosscoder with mechscope diff"
            ) from None


def make_crosscoder(
    variant: str,
    d_model: int,
    d_sae: int,
    *,
    k: int,
    hook_name: str = "",
    l1_coefficient: float | None = None,
    seed: int = 0,
    **provenance: Any,
) -> SAE:
    """A fresh crosscoder over two models of width ``d_model`` (``k``: target L0)."""
    if variant not in ARCHS:
        raise MechscopeError(f"unknown crosscoder {variant!r}: use one of {', '.join(ARCHS)}")
    arch = "relu" if variant == "l1" else "batchtopk"
    cfg = SAEConfig(
        arch=arch,
        d_in=2 * d_model,
        d_sae=d_sae,
        hook_name=hook_name,
        k=k,
        l1_coefficient=l1_coefficient if variant == "l1" else None,
        **provenance,
    )
    return L1Crosscoder(cfg, seed=seed) if variant == "l1" else SAE(cfg, seed=seed)


def decoder_norms(sae: SAE) -> Tensor:
    """``[d_sae 2]``: the norm of each latent's base and finetune decoder."""
    d_in = sae.cfg.d_in
    if d_in % 2:
        raise MechscopeError(f"a crosscoder's d_in is twice the model width; {d_in} is odd")
    return sae.W_dec.view(sae.cfg.d_sae, 2, d_in // 2).norm(dim=-1)


@torch.no_grad()
def relative_norms(sae: SAE) -> Tensor:
    """``[d_sae]`` in [0, 1]: 0 base-only, 0.5 shared, 1 finetune-only (Delta_norm)."""
    norms = decoder_norms(sae).float()
    base, ft = norms[:, 0], norms[:, 1]
    return 0.5 * ((ft - base) / torch.maximum(base, ft).clamp_min(1e-12) + 1)


def classify(delta: Tensor) -> dict[str, list[int]]:
    """Latent indices in each band of the relative decoder norm (latents between bands: none)."""
    return {
        name: torch.nonzero((delta >= lo) & (delta <= hi)).flatten().tolist()
        for name, (lo, hi) in BANDS.items()
    }


@torch.no_grad()
def latent_scaling(sae: SAE, x: Tensor, latents: list[int]) -> dict[int, dict[str, float]]:
    """``nu_eps`` and ``nu_r`` of ``latents`` on inputs ``x [n 2d]`` (already scaled as the
    crosscoder's input), as Minder et al. (2025) define them: the least-squares scale ``beta^m``
    of the latent's finetune part ``f_j d_j^ft`` fitted to model ``m``'s reconstruction error with
    the latent's own part added back (``nu_eps``) or to its reconstruction by all latents
    (``nu_r``), and ``nu = beta^base / beta^ft``. The reconstruction leaves out ``b_dec``: a constant offset is no
    latent's, and with it both betas measure the mean's projection on ``d_j^ft`` (``nu_r`` near 1
    for any latent whose decoder leans on the mean, as the residual's mean does in small models).
    """
    d = sae.cfg.d_in // 2
    out = sae(x)
    f = out.latents if not out.latents.is_sparse else out.latents.to_dense()
    x_hat = out.x_hat - sae.b_dec  # [n 2d]: the latents' part of the reconstruction
    error = x - out.x_hat
    result = {}
    for j in latents:
        fj = f[:, j : j + 1]  # [n 1]
        own = fj * sae.W_dec[j].float()  # [n 2d]: the latent's own part in both models
        recon = own[:, d:]  # [n d]: f_j d_j^ft
        denom = recon.pow(2).sum().clamp_min(1e-30)
        scores = {}
        for kind, y in {"nu_eps": error + own, "nu_r": x_hat}.items():
            beta_base = float((recon * y[:, :d]).sum() / denom)
            beta_ft = float((recon * y[:, d:]).sum() / denom)
            scores[kind] = beta_base / beta_ft if beta_ft != 0 else float("nan")
        scores["fires"] = int((fj > 0).sum())
        result[j] = scores
    return result


def firing_scores(fires: Tensor, planted: Tensor) -> dict[str, float]:
    """Precision and recall of a latent's firing (``[n]`` bool) against planted tokens."""
    tp = float((fires & planted).sum())
    precision = tp / max(1.0, float(fires.sum()))
    recall = tp / max(1.0, float(planted.sum()))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "fires": int(fires.sum())}


STRONG = 0.2  # a latent fires strongly above this share of its largest activation on the corpus


def auroc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve of ``scores`` for the ``labels`` (ties count one half): the
    chance that a random labelled token scores above a random other one."""
    s, y = scores.double().cpu().numpy(), labels.cpu().numpy().astype(bool)
    if y.all() or not y.any():
        return float("nan")
    return stats.auroc(s[y], s[~y])


def activation_scores(acts: Tensor, planted: Tensor) -> dict[str, float]:
    """:func:`firing_scores` of a latent's activations ``[n]`` firing (> 0) and firing strongly
    (> ``STRONG`` x their maximum, keys ``strong_*``) on the planted tokens, and their AUROC."""
    out = firing_scores(acts > 0, planted)
    strong = firing_scores(acts > STRONG * acts.max().clamp_min(0), planted)
    out.update({f"strong_{key}": value for key, value in strong.items()})
    out["auroc"] = auroc(acts, planted)
    return out


SIDES = ("base", "finetuned")


def crosscoder_readout(folder: str | Path, side: str = "base") -> tuple[Any, dict[str, Any]]:
    """The latents of the crosscoder in ``folder`` read from one model's activations alone, as a
    :class:`mechscope.neurons.readouts.Readout`, and the provenance to store with it.

    The model's activation ``x`` fills its own half (``x * scale``); the other half is set to that
    half of ``b_dec`` (the other model's scaled mean), which the encoder subtracts, so only this
    model's deviation from its mean drives the latents. A latent ``i`` reads as ``a_i |d_i|`` with
    ``d_i`` its decoder for this side in model units, and writes ``d_i / |d_i|`` (a latent with no
    decoder on this side reads 0 and writes nothing).
    """
    from mechscope.neurons.readouts import Readout
    from mechscope.sae import load_sae

    if side not in SIDES:
        raise MechscopeError(f"unknown crosscoder side {side!r}: use base or finetuned")
    info = CrosscoderInfo.load(folder)  # first: an SAE folder that is no crosscoder fails here
    sae = load_sae(folder)
    d = info.d_model
    if sae.cfg.d_in != 2 * d:
        raise MechscopeError(f"{folder}: d_in {sae.cfg.d_in} is not twice d_model {d}")
    own = slice(0, d) if side == "base" else slice(d, 2 * d)
    other = slice(d, 2 * d) if side == "base" else slice(0, d)
    scale = info.scale_base if side == "base" else info.scale_finetuned
    rows = sae.W_dec.detach().float()[:, own] / scale  # [d_sae d]: in model units
    lengths = rows.norm(dim=-1)
    writes = rows / lengths.clamp_min(1e-12)[:, None]
    fill = sae.b_dec.detach()[other]

    def read(t: Tensor) -> Tensor:
        x = torch.empty(*t.shape[:-1], 2 * d, dtype=sae.W_dec.dtype, device=t.device)
        x[..., own] = t.to(x.dtype) * scale
        x[..., other] = fill.to(t.device)
        with torch.no_grad():
            return sae.encode(x).float() * lengths.to(t.device)

    readout = Readout(info.hook_name, "latent", tuple(range(sae.cfg.d_sae)), read, writes)
    config = {"path": str(Path(folder).resolve()), "side": side, "d_in": d, "d_sae": sae.cfg.d_sae}
    return readout, config
