"""A fitted anomaly detector: its settings, tensors and calibration, saved as a small folder.

The folder holds ``detector.json`` (settings, the model's identity, per kind and layer the
statistics that put token scores of different layers on one scale, and the held-out trusted
input scores the threshold is calibrated on) and ``detector.safetensors`` (per kind and layer the
fitted tensors, keys ``<kind>/<layer>/<name>``). Loading never unpickles anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file, save_file
from torch import Tensor

from mechscope.anomaly.ensemble import check_combine, check_members
from mechscope.errors import MechscopeError
from mechscope.files import atomic_folder

__all__ = [
    "AGGREGATES",
    "PRESETS",
    "Detector",
    "FitConfig",
    "load_detector",
    "preset",
    "save_detector",
]

FORMAT = "mechscope-anomaly-detector/1"
AGGREGATES = ("max", "mean", "last")
COMBINES = ("max", "mean")
FIT_ON = ("windows", "prompts")


@dataclass(frozen=True)
class FitConfig:
    """How a detector is fitted (trusted text only) and how token scores become input scores."""

    kinds: tuple[str, ...] = ("mahalanobis", "lof", "perplexity", "entropy")
    layers: tuple[int, ...] | None = None  # None: up to 6 evenly spaced layers
    site: str = "blocks.{layer}.hook_resid_post"  # the site read at each layer
    seq_len: int = 64  # tokens per trusted window (BOS included when the tokenizer has one)
    n_tokens: int = 32_768  # trusted tokens read (fitting and held-out calibration together)
    batch_size: int = 8
    holdout: float = 0.2  # share of trusted windows kept out of fitting to calibrate on
    aggregate: str = "max"  # token scores -> input score for the mechanistic kinds
    combine: str = "max"  # layers -> token score: the largest standardised layer score, or
    # their mean ("mean": a shift spread over many layers adds up, one noisy layer is diluted)
    fit_on: str = "windows"  # "prompts": every trusted document is one prompt (its last
    # seq_len tokens) and only its last token is fitted and calibrated (with aggregate "last")
    contrast: tuple[tuple[str, str], ...] = ()  # (positive, negative) prompts of the contrast
    # kind; empty: mechscope.anomaly.contrast.DEFAULT_PAIRS (recorded in the fitted detector)
    lof_dims: int = 32  # principal directions kept for LOF
    lof_sample: int = 2048  # trusted tokens kept as LOF's reference set
    lof_k: int = 20  # LOF neighbours
    seed: int = 0
    ensemble: tuple[str, ...] = ()  # kinds whose input scores are combined by a Gaussian
    # fitted on the held-out trusted inputs (mechscope.anomaly.ensemble); scored as "ensemble"
    ensemble_combine: str = "gaussian"  # "sum": of the members' standardised scores; "max": the
    # largest term's (a term is a kind or kinds joined by "+", summed and standardised again)

    def __post_init__(self) -> None:
        if "{layer}" not in self.site:
            raise MechscopeError(
                f"site {self.site!r} has no {{layer}}; e.g. blocks.{{layer}}.hook_resid_post"
            )
        if not 0 < self.holdout < 1:
            raise MechscopeError(f"holdout must lie in (0, 1), got {self.holdout}")
        if self.aggregate not in AGGREGATES:
            raise MechscopeError(f"aggregate must be one of {', '.join(AGGREGATES)}")
        if self.combine not in COMBINES:
            raise MechscopeError(
                f"combine must be one of {', '.join(COMBINES)}, got {self.combine!r}"
            )
        if self.fit_on not in FIT_ON:
            raise MechscopeError(f"fit_on must be one of {', '.join(FIT_ON)}, got {self.fit_on!r}")
        if self.fit_on == "prompts" and self.aggregate != "last":
            raise MechscopeError(
                "fitting on prompts scores their last token: use aggregate 'last' with it"
            )
        check_combine(self.ensemble_combine)
        check_members(self.ensemble, self.kinds, self.ensemble_combine)
        if self.seq_len < 4 or self.n_tokens < 1 or self.batch_size < 1:
            raise MechscopeError("seq_len must be >= 4, n_tokens and batch_size >= 1")


PRESETS = ("reply", "ood")


def preset(name: str, n_layers: int) -> dict[str, Any]:
    """The :class:`FitConfig` fields of a recommended configuration (docs/anomaly.md,
    "Recommended configurations") for a model of ``n_layers`` layers:

    - ``"reply"``: a planted behaviour at the start of a reply, scored at the prompt's last token:
      the sum of ``update`` at the layer two thirds of the way up (19 of 30) and ``confidence``;
    - ``"ood"``: inputs unlike the trusted text, whole documents: the larger of the residual
      stream's Mahalanobis distance (at 60% and 70% of the depth, 18 and 21 of 30; mean over
      layers and tokens) and the sum of perplexity and the ``attention`` profile."""
    if n_layers < 1:
        raise MechscopeError(f"a preset needs a model with layers, got n_layers={n_layers}")
    if name == "reply":
        return {
            "kinds": ("update", "confidence"),
            "layers": (max(0, 2 * n_layers // 3 - 1),),
            "aggregate": "last",
            "ensemble": ("update", "confidence"),
            "ensemble_combine": "sum",
        }
    if name == "ood":
        layers = sorted({min(n_layers - 1, round(f * n_layers)) for f in (0.6, 0.7)})
        return {
            "kinds": ("mahalanobis", "perplexity", "attention"),
            "layers": tuple(layers),
            "aggregate": "mean",
            "combine": "mean",
            "ensemble": ("mahalanobis", "perplexity+attention"),
            "ensemble_combine": "max",
        }
    raise MechscopeError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")


@dataclass
class Detector:
    """A fitted detector. ``calibration[kind]`` holds ``layers`` (per layer the mean and std of
    held-out log token scores) and ``scores`` (held-out input scores, combined over layers);
    ``calibration["ensemble"]``, when fitted, the members' Gaussian and its held-out scores."""

    config: FitConfig
    model: dict[str, Any]  # fingerprint, name, n_layers
    layers: list[int]  # layers of the layered kinds (the SAE kind: its own layer only)
    tensors: dict[str, Tensor] = field(default_factory=dict)
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)
    sae: dict[str, Any] | None = None  # path, site, layer of the SAE the sae kind reads

    def kind_layers(self, kind: str) -> list[int]:
        from mechscope.anomaly.kinds import KINDS

        if KINDS[kind].reads == "logits":
            return []
        if KINDS[kind].reads == "attention":  # one profile over every layer's heads
            return [-1]
        if kind == "sae":
            assert self.sae is not None
            return [int(self.sae["layer"])]
        if KINDS[kind].reads == "lens":  # the last layer predicts what it predicts
            last = int(self.model["n_layers"]) - 1
            return [layer for layer in self.layers if layer < last]
        return list(self.layers)

    def kind_tensors(self, kind: str, layer: int) -> dict[str, Tensor]:
        prefix = f"{kind}/{layer}/"
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def threshold(self, kind: str, fpr: float) -> float:
        """The input score above which an input is flagged, so that a share ``fpr`` of the
        held-out trusted inputs would be (at most)."""
        if not 0 < fpr < 1:
            raise MechscopeError(f"--fpr must lie in (0, 1), got {fpr}")
        scores = np.asarray(self.calibration[kind]["scores"], dtype=np.float64)
        return float(np.quantile(scores, 1 - fpr, method="higher"))


def save_detector(detector: Detector, folder: str | Path) -> Path:
    """Write ``folder`` (replacing it) atomically: a crash leaves the old or the new detector."""
    folder = Path(folder)
    meta = {
        "format": FORMAT,
        "config": asdict(detector.config),
        "model": detector.model,
        "layers": detector.layers,
        "calibration": detector.calibration,
        "sae": detector.sae,
    }
    with atomic_folder(folder, replace=True) as tmp:
        save_file(
            {k: v.contiguous() for k, v in detector.tensors.items()}, tmp / "detector.safetensors"
        )
        (tmp / "detector.json").write_text(json.dumps(meta, indent=1) + "\n")
    return folder


def load_detector(folder: str | Path) -> Detector:
    """Read a detector folder written by :func:`save_detector`."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "detector.json").read_text())
        tensors = load_file(folder / "detector.safetensors")
    except (OSError, ValueError) as exc:
        raise MechscopeError(
            f"{folder} is not a readable anomaly detector ({str(exc).splitlines()[0]}); "
            "fit one with `mechscope anomaly fit`"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise MechscopeError(f"{folder} is not an anomaly detector of format {FORMAT}")
    cfg = meta["config"]
    cfg["kinds"] = tuple(cfg["kinds"])
    cfg["layers"] = tuple(cfg["layers"]) if cfg["layers"] is not None else None
    cfg["contrast"] = tuple(tuple(pair) for pair in cfg.get("contrast", ()))
    cfg["ensemble"] = tuple(cfg.get("ensemble", ()))
    return Detector(
        config=FitConfig(**cfg),
        model=meta["model"],
        layers=list(meta["layers"]),
        tensors=tensors,
        calibration=meta["calibration"],
        sae=meta.get("sae"),
    )
