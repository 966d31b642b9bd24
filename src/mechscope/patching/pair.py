"""What every analysis of paired prompts shares: the call form, one request, one run record.

Every analysis of a clean/corrupted pair (activation patching, path patching, attribution
patching, ablation effects, circuits) is called as ``fn(model, batch, metric, ...)``: ``batch`` is
a :class:`~mechscope.tasks.base.TaskBatch` (its clean and corrupted tokens, shared attention mask
and each prompt's ``last_pos``) and ``metric`` a :class:`~mechscope.tasks.metrics.Metric`,
``metric(logits, batch) -> [batch]``.

- :func:`resolve` turns the arguments of either call form into a :class:`Pair`, the request: the
  model, the base and source tokens of the direction, the mask, the metric bound to the batch,
  the positions it reads. It checks the direction and the token pair (once, here).
- :func:`run_pair` runs base and source once and returns the :class:`Runs` that every variant
  starts from: the base run's layer arguments and residual stream, both runs' cached sites, and
  the two unpatched metrics.

The earlier form ``fn(model, clean_tokens, corrupt_tokens, metric, ..., attention_mask=...)``
with ``metric(logits) -> [batch]`` still works and raises a :class:`DeprecationWarning`; it
unembeds every position unless ``read_pos`` is given, as before.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from mechscope.cache import Cache
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.models.inputs import LayerInputs
from mechscope.patching.result import Direction
from mechscope.tasks.base import TaskBatch, check_aligned

Tensor = torch.Tensor
Bound = Callable[[Tensor], Tensor]  # a metric bound to its batch: logits -> [batch]
ReadPos = Tensor | Literal["last"] | None


def check_direction(direction: str) -> None:
    if direction not in ("denoise", "noise"):
        raise MechscopeError(f"direction must be 'denoise' or 'noise', not {direction!r}")


def metric_values(metric: Bound, logits: Tensor, batch: int) -> Tensor:
    """``metric(logits)``, checked to be a [batch] tensor (gradients kept)."""
    out = metric(logits)
    if not isinstance(out, Tensor) or out.shape != (batch,):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise MechscopeError(
            f"metric must return a [batch] tensor of {batch} values per prompt, got {shape}; "
            "return one value per prompt, e.g. a logit difference"
        )
    return out


def check_read(values: Tensor, read_pos: Tensor | None) -> Tensor:
    """``values`` of a metric whose logits exist only at ``read_pos``: NaN means it read elsewhere."""
    if read_pos is not None and bool(values.detach().isnan().any()):
        raise MechscopeError(
            "the metric gave NaN with read_pos set: it reads logits at positions other than "
            "read_pos, which are not computed; pass the positions it reads, or read_pos=None"
        )
    return values


def _check_read_pos(read_pos: Any, shape: tuple[int, ...]) -> Tensor | None:
    if read_pos is None:
        return None
    read_pos = torch.as_tensor(read_pos).long().cpu()
    if read_pos.shape != shape[:1] or not bool(((read_pos >= 0) & (read_pos < shape[1])).all()):
        raise MechscopeError(
            f"read_pos must hold one position in [0, {shape[1]}) per prompt ({shape[0]} values), "
            f"got {read_pos.tolist()}; pass e.g. the index of each prompt's last token"
        )
    return read_pos


@dataclass(frozen=True)
class Pair:
    """The request of one analysis: what runs, in which direction, and what it measures."""

    model: HookedModel
    clean: Tensor  # token ids [batch pos]
    corrupt: Tensor  # token ids [batch pos], aligned with clean
    mask: Tensor | None  # [batch pos] attention mask shared by both (None: no padding)
    metric: Bound
    direction: Direction
    read_pos: Tensor | None = None  # [batch] the one position the metric reads per prompt
    chunk: int | None = None  # variants per forward (engines that batch variants)

    def __post_init__(self) -> None:
        check_direction(self.direction)
        check_aligned(self.clean, self.corrupt, self.mask, None)
        if self.chunk is not None and self.chunk < 1:
            raise MechscopeError(f"chunk must be at least 1 variant per forward, got {self.chunk}")
        object.__setattr__(self, "read_pos", _check_read_pos(self.read_pos, self.clean.shape))

    @property
    def batch(self) -> int:
        return self.clean.shape[0]

    @property
    def base(self) -> Tensor:
        """The run that is patched: corrupted when denoising, clean when noising."""
        return self.corrupt if self.direction == "denoise" else self.clean

    @property
    def source(self) -> Tensor:
        """The run the patched values come from."""
        return self.clean if self.direction == "denoise" else self.corrupt

    def values(self, logits: Tensor) -> Tensor:
        """The metric [batch] of logits of the batch's prompts, checked (gradients kept)."""
        return check_read(metric_values(self.metric, logits, self.batch), self.read_pos)

    def clean_corrupt(self, base: Tensor, source: Tensor) -> tuple[float, float]:
        """(clean, corrupted) batch means from the base and source runs' metrics."""
        if self.direction == "noise":
            return float(base.mean()), float(source.mean())
        return float(source.mean()), float(base.mean())


def resolve(
    model: HookedModel,
    first: Any,
    args: Sequence[Any],
    names: Sequence[str],
    defaults: Sequence[Any] = (),
    *,
    caller: str,
    direction: str,
    read_pos: ReadPos = "last",
    attention_mask: Tensor | None = None,
    chunk: int | None = None,
) -> tuple[Pair, tuple[Any, ...]]:
    """The :class:`Pair` of a call and its remaining positional arguments, ``names``.

    ``first`` and ``args`` are the positional arguments after the model: ``(batch, metric,
    *rest)``, or the deprecated ``(clean_tokens, corrupt_tokens, metric, *rest)``; ``defaults``
    fill the last of ``names`` when ``rest`` is short. ``read_pos`` ``"last"`` reads each
    prompt's ``batch.last_pos`` (the deprecated form: every position).
    """
    last = isinstance(read_pos, str) and read_pos == "last"
    if isinstance(first, TaskBatch):
        if attention_mask is not None:
            raise MechscopeError(
                "attention_mask= goes with token ids; a TaskBatch carries its own masks"
            )
        pair = _from_batch(model, first, args[0], direction, first.last_pos if last else read_pos)
        rest = tuple(args[1:])
    elif isinstance(first, Tensor):
        warnings.warn(
            f"{caller}(model, clean_tokens, corrupt_tokens, metric, ...) with metric(logits) is "
            f"deprecated; pass a TaskBatch and a metric(logits, batch): {caller}(model, batch, "
            "metric, ...) (see docs/circuits.md)",
            DeprecationWarning,
            stacklevel=3,
        )
        if len(args) < 2:
            raise MechscopeError(f"{caller} needs corrupted tokens and a metric after clean tokens")
        pos = None if last else read_pos
        pair = Pair(model, first, args[0], attention_mask, args[1], direction, pos)  # type: ignore[arg-type]
        rest = tuple(args[2:])
    else:
        raise MechscopeError(
            f"{caller} takes a TaskBatch (e.g. load_task('ioi', model).tokenize(model)), not "
            f"{type(first).__name__}"
        )
    if chunk is not None:
        pair = replace(pair, chunk=chunk)
    required = len(names) - len(defaults)
    if not required <= len(rest) <= len(names):
        raise MechscopeError(
            f"{caller} takes (model, batch, metric, {', '.join(names)}); got {len(rest)} "
            "arguments after the metric"
        )
    return pair, rest + tuple(defaults[len(rest) - required :])


def _from_batch(
    model: HookedModel, batch: TaskBatch, metric: Any, direction: str, read_pos: Any
) -> Pair:
    """The pair of an aligned batch; an all-ones mask is dropped (the same numbers, and SDPA
    keeps its causal fast path)."""
    batch.require_aligned()
    mask = None if bool(batch.clean_mask.bool().all()) else batch.clean_mask
    bound = lambda logits: metric(logits, batch)  # noqa: E731
    return Pair(model, batch.clean_tokens, batch.corrupt_tokens, mask, bound, direction, read_pos)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Runs:
    """The two unpatched runs that every variant of an analysis starts from."""

    pair: Pair
    inputs: LayerInputs  # the base run's layer arguments
    base: Cache  # the base run's resid_pre of every layer, last resid_post, and its sites
    source: Cache  # the source run's sites
    base_logits: Tensor  # [batch pos d_vocab]
    base_metric: Tensor  # [batch], float32 on the CPU
    source_metric: Tensor  # [batch]
    chunk: int = 1  # variants per forward, counted at full length (batching engines)
    prefix: Any = None  # the base run's keys and values, for position reuse (the engine)
    scratch: Tensor | None = None  # NaN logits like base_logits, filled at read_pos per variant

    @property
    def model(self) -> HookedModel:
        return self.pair.model

    @property
    def batch(self) -> int:
        return self.pair.batch

    @property
    def read_pos(self) -> Tensor | None:
        return self.pair.read_pos

    def evaluate(self, logits: Tensor) -> Tensor:
        """The metric [batch] of one variant's logits, as a float32 CPU tensor."""
        return self.pair.values(logits).detach().float().cpu()

    def resid(self, layer: int) -> Tensor:
        """The base run's residual stream before ``layer`` (``n_layers``: after the last)."""
        n = self.model.dims.n_layers
        if layer == n:
            return self.base[f"blocks.{n - 1}.hook_resid_post"]
        return self.base[f"blocks.{layer}.hook_resid_pre"]

    def clean_corrupt(self) -> tuple[float, float]:
        return self.pair.clean_corrupt(self.base_metric, self.source_metric)


def run_pair(pair: Pair, base_sites: Sequence[str], source_sites: Sequence[str]) -> Runs:
    """Run base and source once: the base run records its layer arguments and caches the
    residual stream before every layer (and after the last) plus ``base_sites``; the source run
    caches ``source_sites``. Both unembed only ``read_pos`` when it is set."""
    model, n = pair.model, pair.model.dims.n_layers
    resid = [f"blocks.{i}.hook_resid_pre" for i in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
    names = list(dict.fromkeys(resid + list(base_sites)))
    with model.capture_inputs() as inputs:
        base_logits, base = model.run_with_cache(
            pair.base, names, pair.mask, read_pos=pair.read_pos
        )
    source_logits, source = model.run_with_cache(
        pair.source, list(source_sites), pair.mask, read_pos=pair.read_pos
    )
    return Runs(
        pair=pair,
        inputs=inputs,
        base=base,
        source=source,
        base_logits=base_logits,
        base_metric=pair.values(base_logits).detach().float().cpu(),
        source_metric=pair.values(source_logits).detach().float().cpu(),
    )
