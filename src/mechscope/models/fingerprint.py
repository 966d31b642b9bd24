"""A model's identity for caches and saved artefacts: a short hash of its weights."""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["model_fingerprint"]

_SAMPLE = 4096  # values of each parameter hashed into a model's fingerprint


def model_fingerprint(model: Any) -> str:
    """A short hash of a model's weights: names, shapes and a strided sample of every parameter.

    Two different checkpoints (even two random tiny models of one config) get different
    fingerprints; loading the same checkpoint again gives the same one. Tuned lenses, activation
    stores and the report's cached SAE are keyed by it.
    """
    digest = hashlib.sha256()
    for name, param in model.hf.named_parameters():
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // _SAMPLE)
        sample = flat[::step][:_SAMPLE].float().cpu().numpy()
        digest.update(f"{name}{tuple(param.shape)}".encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()[:16]
