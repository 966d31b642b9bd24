"""Sparse dictionary learning: SAEs and transcoders, their training, SAELens's file layout and
the published dictionaries (Gemma Scope, sparsify, circuit-tracer; :mod:`mechscope.sae.published`).

One file per architecture (``relu``, ``topk``, ``batchtopk``, ``jumprelu``), all listed in
:data:`ARCHITECTURES`; ``SAE(cfg)`` builds the one named by ``cfg.arch``. See docs/sae.md.
"""

from mechscope.sae import batchtopk, jumprelu, relu, topk  # noqa: F401  (fills ARCHITECTURES)
from mechscope.sae.base import ARCHITECTURES, SAE, SAEConfig, SAEOutput
from mechscope.sae.io import save_sae
from mechscope.sae.published import load_sae  # every layout; io.load_sae reads SAELens only
from mechscope.sae.train import TrainConfig, TrainResult, fit

__all__ = [
    "ARCHITECTURES",
    "SAE",
    "SAEConfig",
    "SAEOutput",
    "TrainConfig",
    "TrainResult",
    "fit",
    "load_sae",
    "save_sae",
]
