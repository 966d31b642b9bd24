"""Mechanistic anomaly detection: flag inputs on which a model runs an unusual mechanism.

Detectors are fitted on activations of trusted text only (:func:`fit_detector`): Mahalanobis
distance with Ledoit-Wolf shrinkage, a diagonal Gaussian on SAE latents, local outlier factor on
PCA-whitened activations, and Mahalanobis on gradient x activation attributions, per layer and
combined across layers; perplexity and output entropy are the black-box baselines. A fitted
detector is a folder (``detector.json`` + ``detector.safetensors``); :func:`score_texts` scores
inputs per document and per token with a threshold calibrated on held-out trusted text.
See docs/anomaly.md.
"""

from mechscope.anomaly.detector import (
    PRESETS,
    Detector,
    FitConfig,
    load_detector,
    preset,
    save_detector,
)
from mechscope.anomaly.fit import default_layers, fit_detector
from mechscope.anomaly.inputs import read_inputs
from mechscope.anomaly.kinds import BASELINES, KINDS
from mechscope.anomaly.metrics import Separation, separation
from mechscope.anomaly.score import AnomalyScores, InputScore, layer_scores, score_texts

__all__ = [
    "BASELINES",
    "KINDS",
    "PRESETS",
    "AnomalyScores",
    "Detector",
    "FitConfig",
    "InputScore",
    "Separation",
    "default_layers",
    "fit_detector",
    "layer_scores",
    "load_detector",
    "preset",
    "read_inputs",
    "save_detector",
    "score_texts",
    "separation",
]
