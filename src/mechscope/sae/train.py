"""Training sparse dictionaries: Adam with warm-up and decay over an iterator of activation batches.

Steps of :func:`fit`, per batch (``[batch d_in]``, or ``(x_in, x_out)`` for a transcoder):

1. learning rate: linear warm-up over ``warmup_steps``, then constant, then linear decay to 0 over
   the last ``decay_fraction`` of the steps (or a cosine over the steps after warm-up);
2. loss: the SAE's squared error plus its sparsity terms (the L1/L0 coefficient ramps up over
   ``sparsity_warmup_steps``) and, for TopK/BatchTopK/JumpReLU, AuxK on the latents that have
   not fired for :func:`dead_window` tokens (coefficient ``aux_coefficient``);
3. when the architecture keeps unit-norm decoder rows, the gradient's component along each row is
   removed before the Adam step and the rows are renormalised after it;
4. bookkeeping: tokens since each latent last fired, L0, FVU, dead fraction; a progress bar; a
   checkpoint every ``checkpoint_every`` steps (see :mod:`mechscope.sae.checkpoint`);
5. optionally, every ``resample_every`` steps, dead latents are re-initialised
   (:mod:`mechscope.sae.resample`).

Trainers see tensors, not sources: the caller owns the activation store. Resuming skips the first
``step`` batches of the iterator, so pass the same deterministic iterator from its start.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import MechscopeError
from mechscope.progress import progress as progress_bar
from mechscope.sae.base import SAE, SAEOutput
from mechscope.sae.batchtopk import BatchTopKSAE
from mechscope.sae.checkpoint import TrainState, load_checkpoint, locked, save_checkpoint
from mechscope.sae.controller import adapt, check_target
from mechscope.sae.resample import resample_dead

__all__ = ["TrainConfig", "TrainResult", "dead_window", "fit", "lr_at"]

DECAYS = ("linear", "cosine", "none")


@dataclass(frozen=True)
class TrainConfig:
    """How to train; ``steps`` or ``tokens`` (turned into steps with ``batch_size``) sets the length."""

    steps: int | None = None
    tokens: int | None = None
    batch_size: int = 4096  # tokens per batch, used to turn ``tokens`` into steps
    lr: float = 4e-4
    warmup_steps: int = 0
    decay: str = "linear"  # linear (to 0 over the last decay_fraction), cosine, none
    decay_fraction: float = 0.2
    betas: tuple[float, float] = (0.9, 0.999)
    sparsity_warmup_steps: int = 0  # L1/L0 coefficient ramps from 0 over these steps
    l0_gain: float = 0.05  # ReLU/JumpReLU with a target k: the controller's log-step per unit error
    l0_anneal: float = 0.5  # fraction of the steps over which the target L0 falls to k
    l0_until: float = 0.8  # fraction of the steps after which the adapted coefficient is frozen
    topk_warmup: float = 0.5  # (Matryoshka) BatchTopK: fraction of the steps choosing k per token
    aux_coefficient: float = 1 / 32  # AuxK weight (TopK, BatchTopK; JumpReLU: 8x)
    dead_window_tokens: int | None = None  # a latent silent this long is dead (None: a quarter
    # of the training tokens, at most 1M)
    grad_clip: float | None = None  # max global gradient norm
    resample_every: int | None = None  # steps between resamplings of dead latents (None: never)
    resample_until: float = 0.5  # fraction of the steps after which resampling stops
    init_b_dec: bool = True  # start b_dec at the mean of the first batch (of the targets)
    seed: int = 0
    checkpoint_every: int | None = None  # steps between checkpoints (with checkpoint_dir)
    log_every: int = 50  # steps between entries of the loss curve

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.tokens is None):
            raise MechscopeError("TrainConfig needs exactly one of steps or tokens")
        if self.total_steps < 1:
            raise MechscopeError(
                f"training needs at least one step: tokens={self.tokens} < batch_size={self.batch_size}"
            )
        if self.decay not in DECAYS:
            raise MechscopeError(
                f"unknown learning-rate decay {self.decay!r}: use one of {', '.join(DECAYS)}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise MechscopeError(f"learning rate must be a positive number, got {self.lr!r}")
        if (
            self.batch_size < 1
            or self.log_every < 1
            or (self.checkpoint_every is not None and self.checkpoint_every < 1)
        ):
            raise MechscopeError("batch_size, log_every and checkpoint_every must be positive")
        fractions = {n: getattr(self, n) for n in ("l0_anneal", "l0_until", "topk_warmup")}
        if not (self.l0_gain > 0 and all(0 <= v <= 1 for v in fractions.values())):
            raise MechscopeError(
                f"l0_gain must be > 0 and {', '.join(fractions)} fractions in [0, 1], got "
                f"l0_gain={self.l0_gain!r}, {fractions}"
            )

    @property
    def dead_window(self) -> int:
        """Tokens without firing after which a latent counts as dead."""
        if self.dead_window_tokens is not None:
            return self.dead_window_tokens
        return min(1_000_000, max(self.batch_size, self.total_steps * self.batch_size // 4))

    @property
    def total_steps(self) -> int:
        return self.steps if self.steps is not None else (self.tokens or 0) // self.batch_size


@dataclass
class TrainResult:
    """The loss curve (one dict per ``log_every`` steps) and the final scores."""

    steps: int
    tokens: int
    fvu: float  # mean over the last steps run (up to 20)
    l0: float
    dead_fraction: float
    history: list[dict[str, float]] = field(default_factory=list)
    coefficient: float | None = None  # ReLU/JumpReLU: the sparsity coefficient at the end


def dead_window(cfg: TrainConfig, sae: SAE) -> int:
    """Tokens without firing after which a latent of ``sae`` is dead: ``cfg.dead_window_tokens``,
    else the shorter of the trainer's default and the architecture's ``dead_window_batches``."""
    if cfg.dead_window_tokens is not None or sae.dead_window_batches is None:
        return cfg.dead_window
    return min(cfg.dead_window, sae.dead_window_batches * cfg.batch_size)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for ``step`` (0-based): warm-up, then constant or cosine, then linear decay."""
    total = cfg.total_steps
    scale = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.decay == "linear":
        start = total - int(cfg.decay_fraction * total)
        if step >= start:
            scale *= (total - step) / max(1, total - start)
    elif cfg.decay == "cosine" and step >= cfg.warmup_steps:
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        scale *= 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * scale


@locked  # one run per checkpoint folder
def fit(
    sae: SAE,
    batches: Iterable[Tensor] | Iterable[tuple[Tensor, Tensor]],
    cfg: TrainConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    sync: Any = None,
) -> TrainResult:
    """Train ``sae`` in place on ``batches``; resume from ``checkpoint_dir`` when it holds a checkpoint.

    ``sync`` (data-parallel training, :mod:`mechscope.distributed.sae`) averages gradients and
    makes the firing statistics global: ``grads(sae)``, ``mean(tensor)``, ``sum(float)``,
    ``any(mask)``.
    """
    check_target(sae)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=cfg.betas)
    state = load_checkpoint(checkpoint_dir, sae, opt, cfg) if checkpoint_dir is not None else None
    state = state or TrainState.new(sae.cfg.d_sae, device=sae.W_enc.device)
    it = iter(batches)
    _skip(it, state.step)
    sae.train()
    sae.aux_coefficient = cfg.aux_coefficient  # type: ignore[attr-defined]
    recent: list[dict[str, float]] = []
    bar = progress_bar(
        range(state.step, cfg.total_steps),
        total=cfg.total_steps - state.step,
        desc="train SAE",
        quiet=not progress,
    )
    for step in bar:
        batch = next(it, None)
        if batch is None:
            break
        x, target = _split(sae, batch)
        if step == 0 and cfg.init_b_dec:
            _init_b_dec(sae, x if target is None else target, sync)
        record, out = train_step(sae, opt, x, target, state, cfg, step, sync)
        if (
            cfg.resample_every
            and (step + 1) % cfg.resample_every == 0
            and step + 1 <= cfg.resample_until * cfg.total_steps
        ):
            dead = state.tokens_since_fired >= dead_window(cfg, sae)
            record["resampled"] = float(
                resample_dead(sae, opt, x, target, out, dead, seed=cfg.seed * 1_000_003 + step)
            )
            state.tokens_since_fired[dead] = 0
        recent = (recent + [record])[-20:]
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.total_steps:
            state.history.append(record)
            bar.set_postfix_str(
                f"loss {record['loss']:.4g} L0 {record['l0']:.1f} dead {record['dead_fraction']:.1%}"
            )
        if (
            checkpoint_dir is not None
            and cfg.checkpoint_every
            and (step + 1) % cfg.checkpoint_every == 0
        ):
            save_checkpoint(checkpoint_dir, sae, opt, state, cfg)
    sae.eval()
    result = _result(state, recent)
    if sae.penalty is not None:
        result.coefficient = float(sae.coefficient)
    return result


def train_step(
    sae: SAE,
    opt: torch.optim.Optimizer,
    x: Tensor,
    target: Tensor | None,
    state: TrainState,
    cfg: TrainConfig,
    step: int,
    sync: Any = None,
) -> tuple[dict[str, float], SAEOutput]:
    """One optimiser step on one batch; updates ``state``; returns the step's numbers and output."""
    lr = lr_at(cfg, step)
    for group in opt.param_groups:
        group["lr"] = lr
    window = dead_window(cfg, sae)
    dead = state.tokens_since_fired >= window if sae.uses_auxk else None
    coef = min(1.0, (step + 1) / cfg.sparsity_warmup_steps) if cfg.sparsity_warmup_steps else 1.0
    if isinstance(sae, BatchTopKSAE):
        sae.per_token = step < cfg.topk_warmup * cfg.total_steps
    out = sae(x)
    terms = sae.loss(x, out, target=target, dead=dead, coef_scale=coef)
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    if sync is not None:
        sync.grads(sae)
    if sae.unit_norm_decoder:
        sae.remove_parallel_gradient()
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip)
    opt.step()
    if sae.unit_norm_decoder:
        sae.normalise_decoder()
    sae.after_step(out)
    record = _bookkeeping(x if target is None else target, out, terms, state, lr, window, sync)
    if sae.penalty is not None:
        if sae.adaptive and coef == 1.0 and step < cfg.l0_until * cfg.total_steps:
            adapt(sae, record["l0"], step / cfg.total_steps, cfg.l0_gain, cfg.l0_anneal)
        record["coefficient"] = float(sae.coefficient)
    return record, out


@torch.no_grad()
def _bookkeeping(
    target: Tensor,
    out: SAEOutput,
    terms: dict[str, Tensor],
    state: TrainState,
    lr: float,
    window: int,
    sync: Any = None,
) -> dict[str, float]:
    n = target.shape[0]
    fired_latents, l0 = _firing(out)
    if sync is not None:  # every rank counts the global batch
        n, l0, fired_latents = int(sync.sum(n)), sync.sum(l0), sync.any(fired_latents)
    state.tokens_since_fired += n
    state.tokens_since_fired[fired_latents] = 0
    state.step += 1
    state.tokens += n
    t = target.to(out.x_hat.dtype)
    fvu = (t - out.x_hat).pow(2).sum() / (t - t.mean(0)).pow(2).sum().clamp_min(1e-30)
    record = {
        "step": float(state.step),
        "lr": lr,
        "fvu": float(fvu),
        "l0": l0 / n,
    }
    record["dead_fraction"] = float((state.tokens_since_fired >= window).float().mean())
    record.update({name: float(value.detach()) for name, value in terms.items()})
    return record


def _firing(out: SAEOutput) -> tuple[Tensor, float]:
    """Latents that fired in the batch (a ``[d_sae]`` mask) and the number of activations."""
    code = out.sparse
    if code is not None:  # TopK/BatchTopK training: read the sparse code, skip the dense latents
        on = code.values.detach() > 0
        fired = torch.zeros(out.latents.shape[-1], dtype=torch.bool, device=code.cols.device)
        fired[code.cols[on]] = True
        return fired, float(on.sum())
    active = out.latents > 0
    return active.reshape(-1, active.shape[-1]).any(0), float(active.sum())


def _split(sae: SAE, batch: Any) -> tuple[Tensor, Tensor | None]:
    if sae.cfg.is_transcoder:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise MechscopeError(
                "a transcoder trains on (x_in, x_out) pairs: pass an iterator of 2-tuples of tensors"
            )
        return _finite(batch[0]), _finite(batch[1])
    if isinstance(batch, (tuple, list)):
        raise MechscopeError(
            "an SAE trains on activation tensors, not pairs: set out_hook_name to train a transcoder"
        )
    return _finite(batch), None


def _finite(x: Tensor) -> Tensor:
    """``x``, or an error when it holds inf or NaN (one would turn every weight into NaN)."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise MechscopeError(
            f"an activation batch holds {bad} inf/NaN values; check the activations (a float16 "
            "store can overflow: harvest with --dtype float32 or bfloat16)"
        )
    return x


def _skip(it: Iterator[Any], n: int) -> None:
    for i in range(n):
        if next(it, None) is None:
            raise MechscopeError(
                f"cannot resume: the batch iterator ended after {i} batches, the checkpoint is at step {n}"
            )


@torch.no_grad()
def _init_b_dec(sae: SAE, target: Tensor, sync: Any = None) -> None:
    mean = sae.scale_in(target).mean(0)
    if sync is not None:
        mean = sync.mean(mean)
    sae.b_dec.copy_(mean)


def _result(state: TrainState, recent: list[dict[str, float]]) -> TrainResult:
    def mean(key: str) -> float:
        return sum(r[key] for r in recent) / len(recent) if recent else float("nan")

    return TrainResult(
        state.step,
        state.tokens,
        mean("fvu"),
        mean("l0"),
        mean("dead_fraction"),
        list(state.history),
    )
