"""Sparse dictionary learning: SAEs and transcoders, their training, SAELens's file layout and
the published dictionaries (Gemma Scope, sparsify, circuit-tracer; :mod:`mechscope.sae.published`).

One file per architecture (``relu``, ``topk``, ``batchtopk``, ``jumprelu``, ``matryoshka``), all listed in
:data:`ARCHITECTURES`; ``SAE(cfg)`` builds the one named by ``cfg.arch``. See docs/sae.md.
"""

from mechscope.sae import (  # noqa: F401  (fills ARCHITECTURES)
    batchtopk,
    jumprelu,
    matryoshka,
    relu,
    topk,
)
from mechscope.sae.base import ARCHITECTURES, SAE, SAEConfig, SAEOutput
from mechscope.sae.io import save_sae
from mechscope.sae.published import load_sae  # every layout; io.load_sae reads SAELens only
from mechscope.sae.train import TrainConfig, TrainResult, fit
from mechscope.sae.truth import TruthScores, load_truth, score_dictionary

__all__ = [
    "ARCHITECTURES",
    "SAE",
    "SAEConfig",
    "SAEOutput",
    "TrainConfig",
    "TrainResult",
    "TruthScores",
    "fit",
    "load_sae",
    "load_truth",
    "save_sae",
    "score_dictionary",
]
