"""A transcoder for every layer of a model: per-layer transcoders or one cross-layer transcoder.

Both are held in one shape, that of a cross-layer transcoder (CLT; Ameisen et al. 2025): the
features of layer ``l`` read the MLP input of layer ``l`` (``blocks.l.mlp.hook_in``, the
normalised residual stream) and write to the MLP outputs (``blocks.m.hook_mlp_out``) of layers
``m >= l``. A per-layer transcoder set writes only to ``m == l``. In model units::

    pre[l]     = x[l] @ W_enc[l] + b_enc[l]                          [... d_sae]
    acts[l]    = JumpReLU(pre, threshold[l]) | ReLU | TopK_k(pre)    [... d_sae]
    out[m]     = sum_{l <= m} acts[l] @ W_dec[l][:, m - l] + b_dec[m]  [... d_model]

``W_dec[l]`` is ``[d_sae, n_out(l), d_model]`` with ``n_out(l) = n_layers - l`` for a CLT and 1
for per-layer transcoders (circuit-tracer's layout of ``W_dec_l``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import MechscopeError

__all__ = ["ACTIVATIONS", "TranscoderSet", "from_saes", "in_site", "out_site"]

ACTIVATIONS = ("jumprelu", "relu", "topk")


def in_site(layer: int) -> str:
    """The site the features of ``layer`` read."""
    return f"blocks.{layer}.mlp.hook_in"


def out_site(layer: int) -> str:
    """The site the decoders aimed at ``layer`` write."""
    return f"blocks.{layer}.hook_mlp_out"


@dataclass
class TranscoderSet:
    """Encoders and decoders for every layer (tensors in model units; see the module doc)."""

    W_enc: list[Tensor]  # per layer [d_model d_sae]
    b_enc: list[Tensor]  # per layer [d_sae]
    W_dec: list[Tensor]  # per layer [d_sae n_out d_model]
    b_dec: Tensor  # [layer d_model]
    activation: str = "jumprelu"
    threshold: list[Tensor] | None = None  # JumpReLU: per layer [d_sae]
    k: int | None = None  # TopK: active features per token and layer
    model_name: str | None = None  # provenance: the model the transcoders were trained on
    fingerprint: str | None = None  # that model's weights hash (mechscope.models.fingerprint)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise MechscopeError(
                f"unknown transcoder activation {self.activation!r}: use one of "
                f"{', '.join(ACTIVATIONS)}"
            )
        n = len(self.W_enc)
        if not n or not (len(self.b_enc) == len(self.W_dec) == n == self.b_dec.shape[0]):
            raise MechscopeError("transcoder set: every layer needs W_enc, b_enc, W_dec, b_dec")
        for layer, w in enumerate(self.W_dec):
            if w.ndim != 3 or w.shape[1] not in (1, n - layer):
                raise MechscopeError(
                    f"W_dec of layer {layer} must be [d_sae, 1 or {n - layer}, d_model], "
                    f"got {list(w.shape)}"
                )
        if self.activation == "jumprelu" and self.threshold is None:
            raise MechscopeError("a JumpReLU transcoder set needs thresholds")
        if self.activation == "topk" and not self.k:
            raise MechscopeError("a TopK transcoder set needs k")

    @property
    def n_layers(self) -> int:
        return len(self.W_enc)

    @property
    def d_model(self) -> int:
        return int(self.W_enc[0].shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc[0].shape[1])

    @property
    def cross_layer(self) -> bool:
        return any(w.shape[1] > 1 for w in self.W_dec)

    def pre_activations(self, layer: int, x: Tensor) -> Tensor:
        """``x [... d_model]`` at ``in_site(layer)`` -> ``[... d_sae]``."""
        return x.to(self.W_enc[layer].dtype) @ self.W_enc[layer] + self.b_enc[layer]

    def activate(self, layer: int, pre: Tensor) -> Tensor:
        if self.activation == "relu":
            return pre.relu()
        if self.activation == "jumprelu":
            assert self.threshold is not None
            return pre * (pre > self.threshold[layer])
        values, idx = pre.topk(int(self.k or 0), dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, values.relu())

    def encode(self, layer: int, x: Tensor) -> Tensor:
        return self.activate(layer, self.pre_activations(layer, x))

    def decoder(self, layer: int, out_layer: int) -> Tensor | None:
        """``[d_sae d_model]``: what the features of ``layer`` write to ``out_layer`` (None: nothing)."""
        w = self.W_dec[layer]
        j = out_layer - layer
        return w[:, j] if 0 <= j < w.shape[1] else None

    def decode(self, acts: Sequence[Tensor]) -> list[Tensor]:
        """Per-layer latents ``[... d_sae]`` -> per-layer MLP-output reconstructions."""
        outs = []
        for m in range(self.n_layers):
            out = self.b_dec[m].expand(*acts[0].shape[:-1], self.d_model).clone()
            for layer in range(m + 1):
                w = self.decoder(layer, m)
                if w is not None:
                    out = out + acts[layer].to(w.dtype) @ w
            outs.append(out)
        return outs

    def to(self, dtype: torch.dtype) -> TranscoderSet:
        def cast(ts: list[Tensor] | None) -> Any:
            return None if ts is None else [t.to(dtype) for t in ts]

        return TranscoderSet(
            cast(self.W_enc), cast(self.b_enc), cast(self.W_dec), self.b_dec.to(dtype),
            self.activation, cast(self.threshold), self.k, self.model_name, self.fingerprint,
        )  # fmt: skip

    def check_model(self, model: Any) -> None:
        """One-line errors for transcoders that do not fit ``model`` (layers, width)."""
        from mechscope.models.fingerprint import model_fingerprint

        d = model.dims
        if self.fingerprint and self.fingerprint != model_fingerprint(model):
            raise MechscopeError(
                f"these transcoders were trained on another model ({self.model_name!r}, weights "
                f"{self.fingerprint}); use transcoders trained on this one"
            )
        if self.n_layers != d.n_layers:
            raise MechscopeError(
                f"the transcoders cover {self.n_layers} layers but the model has {d.n_layers}: "
                "they belong to another model, or some layers are missing"
            )
        if self.d_model != d.d_model:
            raise MechscopeError(
                f"the transcoders read width {self.d_model} but the model's d_model is "
                f"{d.d_model}: they belong to another model"
            )


def from_saes(saes: Sequence[Any], model_name: str | None = None) -> TranscoderSet:
    """A per-layer set from ``mechscope.sae`` transcoders, one per layer in order.

    Input scaling and centring are folded into the encoder (the functions are unchanged).
    """
    if not saes:
        raise MechscopeError("no transcoders given: pass one per layer")
    archs = {s.cfg.arch for s in saes}
    if len(archs) > 1 or not archs <= {"jumprelu", "relu", "topk"}:
        raise MechscopeError(
            f"graphs need ReLU, JumpReLU or TopK transcoders of one kind, got {sorted(archs)}"
        )
    w_enc, b_enc, w_dec, b_dec, thr = [], [], [], [], []
    for layer, sae in enumerate(saes):
        c = sae.cfg
        if c.hook_name != in_site(layer) or c.out_hook_name != out_site(layer):
            raise MechscopeError(
                f"transcoder {layer} maps {c.hook_name} -> {c.out_hook_name}; graphs need "
                f"{in_site(layer)} -> {out_site(layer)} for every layer (missing or misplaced layer)"
            )
        if getattr(sae, "W_skip", None) is not None:
            raise MechscopeError("skip transcoders are not supported by graphs; use ones without")
        with torch.no_grad():
            s = c.normalize_scale or 1.0
            we = sae.W_enc.detach() * s
            be = sae.b_enc.detach().clone()
            if c.centre_input:
                be = be - sae.b_dec.detach() @ sae.W_enc.detach()
            w_enc.append(we)
            b_enc.append(be)
            w_dec.append((sae.W_dec.detach() / s)[:, None, :])
            b_dec.append(sae.b_dec.detach() / s)
            if c.arch == "jumprelu":
                thr.append(sae.threshold.detach().expand(c.d_sae).clone())
    arch = archs.pop()
    k = saes[0].cfg.k if arch == "topk" else None
    return TranscoderSet(
        w_enc, b_enc, w_dec, torch.stack(b_dec), arch, thr or None, k,
        model_name or saes[0].cfg.model_name,
    )  # fmt: skip
