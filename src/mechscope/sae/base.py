"""What every sparse dictionary shares: its config, its parameters and the encode/decode contract.

An SAE reads an activation ``x [... d_in]`` at ``hook_name`` and writes a reconstruction
``x_hat [... d_out]``; a transcoder reads the MLP input and writes the MLP output
(``out_hook_name``). Steps, in the model's units:

1. scale: ``x * normalize_scale`` (the dataset's unit-mean-squared-norm factor, if recorded);
2. centre: subtract ``b_dec`` when ``apply_b_dec_to_input`` (SAELens's convention);
3. ``pre_acts = x @ W_enc + b_enc`` and ``latents = activation(pre_acts)`` (one file per
   architecture: ``relu.py``, ``topk.py``, ``batchtopk.py``, ``jumprelu.py``);
4. ``x_hat = (latents @ W_dec + b_dec) / normalize_scale``.

Losses are computed in normalised units, so hyperparameters do not depend on the site's scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from mechscope.errors import MechscopeError

__all__ = ["ARCHITECTURES", "SAE", "SAEConfig", "SAEOutput", "register"]

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

ARCHITECTURES: dict[str, type[SAE]] = {}


def register(name: str):
    """Class decorator: list an SAE subclass in :data:`ARCHITECTURES` under ``name``."""

    def add(cls: type[SAE]) -> type[SAE]:
        cls.arch = name
        ARCHITECTURES[name] = cls
        return cls

    return add


@dataclass(frozen=True)
class SAEConfig:
    """What an SAE needs to run, and (last four fields) where it came from."""

    arch: str  # a key of ARCHITECTURES: relu, topk, batchtopk, jumprelu, matryoshka
    d_in: int  # input width
    d_sae: int  # number of latents
    hook_name: str = ""  # site the SAE reads (and, for an SAE, writes)
    out_hook_name: str | None = None  # transcoder: the site it writes (None for an SAE)
    d_out: int | None = None  # transcoder output width (None: d_in)
    k: int | None = None  # target L0: TopK per token, (Matryoshka) BatchTopK mean per token,
    # ReLU/JumpReLU through an adaptive sparsity coefficient (see controller.py)
    l1_coefficient: float | None = None  # ReLU: fixed L1 weight (None: adapted to reach k)
    l0_coefficient: float | None = None  # JumpReLU: fixed L0 weight (None: adapted to reach k)
    threshold: float = 0.1  # JumpReLU: initial threshold (normalised units)
    bandwidth: float = 0.02  # JumpReLU: rectangle-kernel width of the straight-through estimator
    matryoshka_widths: tuple[int, ...] | None = None  # Matryoshka: prefix widths (None: d_sae/2,
    # d_sae; d_sae is always the last)
    normalize_scale: float | None = None  # x * s before encoding, x_hat / s after decoding
    apply_b_dec_to_input: bool | None = None  # None: True for an SAE, False for a transcoder
    dtype: str = "float32"
    # provenance, never used to compute
    model_name: str | None = None
    dataset: str | None = None
    version: str | None = None
    include_first: bool | None = None  # trained on each window's first position too (None: unknown)

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            known = ", ".join(sorted(ARCHITECTURES))
            raise MechscopeError(f"unknown SAE architecture {self.arch!r}: use one of {known}")
        for name in ("d_in", "d_sae") + (("d_out",) if self.d_out is not None else ()):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MechscopeError(f"SAE {name} must be a positive integer, got {value!r}")
        needs_k = self.arch in ("topk", "batchtopk", "matryoshka")
        if (needs_k or self.k is not None) and (
            not isinstance(self.k, int) or not 1 <= self.k <= self.d_sae
        ):
            raise MechscopeError(
                f"{self.arch} SAE needs k between 1 and d_sae={self.d_sae}: pass k (got {self.k!r})"
            )
        for name in ("l1_coefficient", "l0_coefficient", "threshold", "bandwidth"):
            value = getattr(self, name)
            if value is None:
                continue
            positive = name in ("threshold", "bandwidth")
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                need = "> 0" if positive else ">= 0"
                raise MechscopeError(f"SAE {name} must be a finite number {need}, got {value!r}")
        scale = self.normalize_scale
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise MechscopeError(
                f"normalize_scale must be a positive finite number or None, got {scale!r}"
            )
        if self.dtype not in DTYPES:
            raise MechscopeError(
                f"unknown SAE dtype {self.dtype!r}: use one of {', '.join(DTYPES)}"
            )
        widths = self.matryoshka_widths
        if widths is not None and (
            not widths
            or any(not isinstance(w, int) or not 0 < w <= self.d_sae for w in widths)
            or any(a >= b for a, b in zip(widths, widths[1:]))
        ):
            raise MechscopeError(
                f"matryoshka_widths must increase strictly within 1..d_sae={self.d_sae}, got {widths!r}"
            )
        if self.out_hook_name is None and self.d_out not in (None, self.d_in):
            raise MechscopeError(
                "an SAE with d_out != d_in must be a transcoder: set out_hook_name"
            )

    @property
    def is_transcoder(self) -> bool:
        return self.out_hook_name is not None

    @property
    def width_out(self) -> int:
        return self.d_out if self.d_out is not None else self.d_in

    @property
    def centre_input(self) -> bool:
        """Whether ``b_dec`` is subtracted from the input (SAELens's ``apply_b_dec_to_input``)."""
        if self.apply_b_dec_to_input is None:
            return not self.is_transcoder
        return self.apply_b_dec_to_input


class SAEOutput(NamedTuple):
    """A forward pass: reconstruction (model units), latents and pre-activations.

    ``sparse`` is set by the fast training path of TopK/BatchTopK (a ``SparseCode``): there
    ``latents`` is a sparse COO tensor and ``pre_acts`` carries no gradient; the loss uses the code.
    """

    x_hat: Tensor  # [... d_out]
    latents: Tensor  # [... d_sae]
    pre_acts: Tensor  # [... d_sae]
    sparse: Any = None


class SAE(nn.Module):
    """A sparse dictionary; ``SAE(cfg)`` builds the subclass registered for ``cfg.arch``."""

    arch: ClassVar[str] = ""
    unit_norm_decoder: ClassVar[bool] = True  # renormalise W_dec rows after each optimiser step
    uses_auxk: ClassVar[bool] = False  # TopK-style AuxK loss for dead latents
    dead_window_batches: ClassVar[int | None] = None  # default dead window in batches (None: the
    # trainer's, a quarter of the run)
    penalty: ClassVar[str | None] = None  # config field of the sparsity coefficient, if any
    penalty_start: ClassVar[float] = 0.0  # the adaptive coefficient's first value
    # Mean of a per-batch statistic over the whole batch: the identity in one process; data-
    # parallel training sets it to the mean over ranks (AuxK's normaliser then spans every slice).
    batch_mean: Callable[[Tensor], Tensor] | None = None
    # Every rank's copy of a tensor, concatenated in rank order (None in one process): BatchTopK
    # takes its threshold over the whole batch with it.
    batch_gather: Callable[[Tensor], Tensor] | None = None

    def __new__(cls, cfg: SAEConfig, *args: Any, **kwargs: Any) -> SAE:
        if cls is SAE:
            cls = ARCHITECTURES[cfg.arch]
        return super().__new__(cls)

    def __init__(self, cfg: SAEConfig, *, seed: int | None = 0) -> None:
        super().__init__()
        self.cfg = cfg
        dtype = DTYPES[cfg.dtype]
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        # Decoder rows: random unit directions; encoder starts as the decoder's transpose
        # (Gao et al. 2024, Anthropic April 2024 update).
        w_dec = torch.randn(cfg.d_sae, cfg.width_out, generator=gen, dtype=torch.float64)
        w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
        w_enc = w_dec.T.clone() if cfg.width_out == cfg.d_in else _rand_unit_cols(cfg, gen)
        self.W_enc = nn.Parameter(w_enc.to(dtype).contiguous())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(w_dec.to(dtype).contiguous())
        self.b_dec = nn.Parameter(torch.zeros(cfg.width_out, dtype=dtype))
        if self.penalty is not None:  # the coefficient in use: fixed, or adapted by the trainer
            fixed = getattr(cfg, self.penalty)
            start = self.penalty_start if fixed is None else fixed
            self.register_buffer("coefficient", torch.tensor(start, dtype=torch.float64))
            self.register_buffer("l0_start", torch.tensor(math.nan, dtype=torch.float64))

    @property
    def adaptive(self) -> bool:
        """Whether training adapts the sparsity coefficient to reach ``cfg.k`` (no fixed value)."""
        return self.penalty is not None and getattr(self.cfg, self.penalty) is None

    # --- the contract -------------------------------------------------------------------------
    def check_input(self, x: Tensor, width: int | None = None, what: str = "activations") -> None:
        expected = self.cfg.d_in if width is None else width
        if x.shape[-1] != expected:
            name = "d_in" if width is None else "d_out"
            raise MechscopeError(
                f"wrong SAE dimensions: {what} have d={x.shape[-1]}, SAE expects {name}={expected}"
            )
        if torch.isnan(x).any():
            raise MechscopeError(
                f"{what} contain NaN: clean the activations before running the SAE"
            )

    def scale_in(self, x: Tensor) -> Tensor:
        """Model units -> normalised units (the SAE's own)."""
        x = x.to(self.W_enc.dtype)
        return x * self.cfg.normalize_scale if self.cfg.normalize_scale is not None else x

    def pre_activations(self, x: Tensor) -> Tensor:
        """``[... d_in]`` model units -> ``[... d_sae]`` encoder pre-activations."""
        self.check_input(x)
        x = self.scale_in(x)
        if self.cfg.centre_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activate(self, pre_acts: Tensor) -> Tensor:
        """The architecture's non-linearity: pre-activations -> latents."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """``x [... d_in]`` (model units) -> ``latents [... d_sae]``."""
        return self.activate(self.pre_activations(x))

    def decode_normalised(self, latents: Tensor) -> Tensor:
        return latents @ self.W_dec + self.b_dec

    def decode(self, latents: Tensor) -> Tensor:
        """``latents [... d_sae]`` -> ``x_hat [... d_out]`` in model units."""
        if latents.shape[-1] != self.cfg.d_sae:
            raise MechscopeError(
                f"wrong SAE dimensions: latents have d={latents.shape[-1]}, SAE has d_sae={self.cfg.d_sae}"
            )
        out = self.decode_normalised(latents)
        return out / self.cfg.normalize_scale if self.cfg.normalize_scale is not None else out

    def forward(self, x: Tensor) -> SAEOutput:  # type: ignore[override]
        pre = self.pre_activations(x)
        latents = self.activate(pre)
        return SAEOutput(self.decode(latents), latents, pre)

    # --- training -----------------------------------------------------------------------------
    def loss(
        self,
        x: Tensor,
        out: SAEOutput,
        *,
        target: Tensor | None = None,
        dead: Tensor | None = None,
        coef_scale: float = 1.0,
    ) -> dict[str, Tensor]:
        """Loss terms in normalised units: ``mse`` plus the architecture's; ``loss`` is their sum.

        ``target`` is the transcoder's output activation (default: ``x`` itself); ``dead`` a
        ``[d_sae]`` bool mask of latents that have not fired for a while (AuxK); ``coef_scale``
        multiplies the sparsity coefficient (the trainer's warm-up).
        """
        target = x if target is None else target
        if self.cfg.is_transcoder:
            self.check_input(target, self.cfg.width_out, "output activations")
        residual = self.scale_in(target) - self.scale_in(out.x_hat)
        terms = {"mse": residual.pow(2).sum(-1).mean()}
        terms.update(self.penalties(out, residual, dead, coef_scale))
        terms["loss"] = sum(terms.values())  # type: ignore[assignment]
        return terms

    def penalties(
        self, out: SAEOutput, residual: Tensor, dead: Tensor | None, coef_scale: float = 1.0
    ) -> dict[str, Tensor]:
        """Architecture-specific loss terms (sparsity, AuxK)."""
        return {}

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Put every decoder row back to unit norm (called after each optimiser step)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def remove_parallel_gradient(self) -> None:
        """Drop the part of ``W_dec``'s gradient along its rows, which only changes their norms."""
        grad = self.W_dec.grad
        if grad is not None:
            w = self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
            grad.sub_((grad * w).sum(1, keepdim=True) * w)

    def after_step(self, out: SAEOutput) -> None:
        """Hook for state learned outside the gradient (BatchTopK's threshold)."""

    def extra_repr(self) -> str:
        c = self.cfg
        return f"arch={c.arch}, d_in={c.d_in}, d_sae={c.d_sae}, hook_name={c.hook_name!r}"


def _rand_unit_cols(cfg: SAEConfig, gen: torch.Generator | None) -> Tensor:
    w = torch.randn(cfg.d_in, cfg.d_sae, generator=gen, dtype=torch.float64)
    return w / w.norm(dim=0, keepdim=True)
