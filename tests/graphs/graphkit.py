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


A_TOKEN, B_TOKEN, N0, N1 = (
    7,
    42,
    5,
    11,
)  # planted: token A -> neuron N0 (layer 0) -> N1 (layer 1) -> B


def _last_in(model, layer: int, tokens: torch.Tensor) -> torch.Tensor:
    site = f"blocks.{layer}.mlp.hook_in"
    _, cache = model.run_with_cache(tokens, names=[site])
    return cache[site][:, -1]


@torch.no_grad()
def planted_opt(seed: int = 0):
    """A tiny OPT (ReLU MLPs, so its MLPs are exact transcoders) with a planted two-step path:
    token A at the last position fires neuron N0 of layer 0, which writes a direction that fires
    neuron N1 of layer 1, which writes the unembedding direction of token B. The other MLP
    weights are shrunk so that the path dominates the prediction."""
    from mechscope.models.hooked import HookedModel
    from mechscope.models.tiny import tiny_model

    model = HookedModel(tiny_model("opt", seed=seed))
    g = torch.Generator().manual_seed(seed)
    layers = model.hf.model.decoder.layers
    for layer in layers:
        layer.fc1.weight.mul_(0.2)
        layer.fc2.weight.mul_(0.2)
    rand = torch.randint(2, 101, (64, 8), generator=g)
    with_a = rand.clone()
    with_a[:, -1] = A_TOKEN
    rand[rand[:, -1] == A_TOKEN, -1] = A_TOKEN + 1
    for layer, neuron, out_dir in ((0, N0, None), (1, N1, "B")):
        on, off = _last_in(model, layer, with_a), _last_in(model, layer, rand)
        w = on.mean(0) - off.mean(0)
        w = w / w.norm()
        fc1, fc2 = layers[layer].fc1, layers[layer].fc2
        hi, lo = float((on @ w).min()), float((off @ w).max())
        fc1.weight[neuron] = w * 4 / (hi - lo)
        fc1.bias[neuron] = -4 * (lo + hi) / 2 / (hi - lo)
        if out_dir is None:
            u = torch.randn(fc2.weight.shape[0], generator=g)
            fc2.weight[:, neuron] = 3 * u / u.norm()
        else:
            w_u = model.unembed.weight
            fc2.weight[:, neuron] = (
                12 * (w_u[B_TOKEN] - w_u.mean(0)) / (w_u[B_TOKEN] - w_u.mean(0)).norm()
            )
    return model


def opt_transcoders(model) -> TranscoderSet:
    """The exact transcoders of an OPT model: its ReLU MLPs."""
    layers = model.hf.model.decoder.layers
    return TranscoderSet(
        W_enc=[la.fc1.weight.detach().T.clone() for la in layers],
        b_enc=[la.fc1.bias.detach().clone() for la in layers],
        W_dec=[la.fc2.weight.detach().T[:, None].clone() for la in layers],
        b_dec=torch.stack([la.fc2.bias.detach() for la in layers]),
        activation="relu",
    )
