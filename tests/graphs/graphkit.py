"""Shared pieces for the graph tests: random transcoder sets on tiny random models."""

from __future__ import annotations

import torch

from mechscope.graphs.transcoders import TranscoderSet


def random_set(
    model, d_sae: int = 24, cross_layer: bool = False, activation: str = "relu", seed: int = 1
) -> TranscoderSet:
    """Random transcoders for every layer of ``model`` (float64), a few features active per token."""
    n, d = model.dims.n_layers, model.dims.d_model
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=f64)

    return TranscoderSet(
        W_enc=[randn(d, d_sae) / d**0.5 for _ in range(n)],
        b_enc=[randn(d_sae) * 0.1 - 0.3 for _ in range(n)],
        W_dec=[randn(d_sae, n - layer if cross_layer else 1, d) * 0.3 for layer in range(n)],
        b_dec=randn(n, d) * 0.1,
        activation=activation,
        threshold=[torch.full((d_sae,), 0.2, dtype=f64) for _ in range(n)]
        if activation == "jumprelu"
        else None,
        k=4 if activation == "topk" else None,
    )
