"""``compress(model, config)``: circuit-guided mixed-precision quantization, end to end.

Steps: the layout of every decoder-layer Linear weight (:mod:`.groups`); calibration statistics
on text (:mod:`.calib`); the protected tasks' importance from EAP-IG node scores mapped to weight
slices (:mod:`.importance`); per-group error tables (:mod:`.tables`); a width per group from the
knapsack allocator (:mod:`.methods`, :mod:`.allocate`); quantization in place with RTN or GPTQ
(:mod:`.apply`); a recount of the bits from the weights; optionally the export folder
(:mod:`.export`). Embeddings, norms and the unembedding stay unquantized and outside the budget.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mechscope.circuits import METHODS as ATTRIBUTIONS
from mechscope.compress.apply import QUANTIZERS, Recount, quantize_model, recount
from mechscope.compress.calib import input_stats, loss_grads, repeated_fisher, task_fisher
from mechscope.compress.evaluate import repeated_tokens
from mechscope.compress.export import export
from mechscope.compress.groups import DEFAULT_GROUP, Layout, linear_weights
from mechscope.compress.importance import node_scores, task_importance
from mechscope.compress.methods import (
    METHODS,
    NEEDS,
    TASK_METHODS,
    Inputs,
    check_method,
    normalised,
)
from mechscope.compress.quant import WIDTHS, check_widths, effective_bits
from mechscope.compress.tables import error_tables
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.tasks import evaluate, load_task
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import logit_diff

Tensor = torch.Tensor
IMPORTANCES = {"eap-ig": 0.1, "gradient": 1.0}  # the default task weight of each


@dataclass(frozen=True)
class CompressConfig:
    """What to compress and how; every field has a CLI option of the same name."""

    bits: float  # average effective bits per decoder-layer Linear weight (incl. scales)
    protect: tuple[str, ...] = ()  # built-in task names or .jsonl task files
    method: str = "circuit"  # a name in methods.METHODS
    quantizer: str = "rtn"  # rtn or gptq
    widths: tuple[int, ...] = WIDTHS
    group_size: int = DEFAULT_GROUP
    n_prompts: int = 16  # prompts per protected task for the importance
    attribution: str = "eap-ig"  # eap or eap-ig
    steps: int = 5  # EAP-IG interpolation steps
    calib_tokens: int = 8192  # calibration tokens (activation statistics, gradients, Hessians)
    seq_len: int = 128
    corpus: str | None = None  # calibration text: None (the built-in corpus), a file or folder
    lm_weight: float = 1.0  # weight of the general-LM term (the LM loss's Fisher table)
    task_weight: float | None = None  # weight of the tasks' term (None: 0.1 eap-ig, 1.0 gradient)
    importance: str = "eap-ig"  # eap-ig: node scores on slices; gradient: the tasks' Fisher
    prune: float = 0.0  # fraction of heads and of MLP neurons to prune (structured)
    prune_neurons: float = 0.0  # fraction of MLP neurons to prune by their removal Fisher
    seed: int = 0

    def __post_init__(self) -> None:
        check_method(self.method)
        object.__setattr__(self, "widths", check_widths(self.widths))
        object.__setattr__(self, "protect", tuple(self.protect))
        if self.quantizer not in QUANTIZERS:
            raise MechscopeError(f"unknown quantizer {self.quantizer!r}; choose rtn or gptq")
        if self.attribution not in ATTRIBUTIONS:
            raise MechscopeError(
                f"unknown attribution {self.attribution!r}; choose {', '.join(ATTRIBUTIONS)}"
            )
        if self.importance not in IMPORTANCES:
            raise MechscopeError(
                f"unknown importance {self.importance!r}; choose {', '.join(IMPORTANCES)}"
            )
        if self.task_weight is None:
            object.__setattr__(self, "task_weight", IMPORTANCES[self.importance])
        if self.method in TASK_METHODS and not self.protect:
            raise MechscopeError(f"method {self.method!r} needs --protect TASKS (e.g. ioi)")
        for name, v in (("n_prompts", self.n_prompts), ("calib_tokens", self.calib_tokens)):
            if v < 1:
                raise MechscopeError(f"{name} must be at least 1, got {v}")
        check_budget(self.bits, self.widths, self.group_size)
        if not 0 <= self.prune_neurons < 1:
            raise MechscopeError(f"--prune-neurons must be in [0, 1), got {self.prune_neurons}")
        if self.prune_neurons and (self.prune or self.method in ("uniform", "shuffled")):
            raise MechscopeError(
                "--prune-neurons works with the knapsack methods and without --prune; "
                "drop one of them"
            )


def check_budget(bits: float, widths: tuple[int, ...], group_size: int) -> None:
    low = effective_bits(torch.tensor([min(widths)]), group_size)
    if bits < low:
        raise MechscopeError(
            f"budget {bits} effective bits is below the smallest width ({min(widths)} bits + a "
            f"16-bit scale and zero per {group_size} weights = {low:g}); raise --bits"
        )
    if bits > 16:
        raise MechscopeError(f"budget {bits} bits exceeds 16 (fp16 everywhere); lower --bits")


@dataclass(frozen=True)
class CompressResult:
    """Widths per group, the accounting and what guided the allocation."""

    config: CompressConfig
    layout: Layout
    widths: Tensor  # [group]
    recount: Recount | None
    tasks: dict[str, float] = field(default_factory=dict)  # clean logit diff per protected task
    top_heads: list[tuple[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    export: dict[str, Any] | None = None

    @property
    def effective_bits(self) -> float:
        return effective_bits(self.widths, self.layout.group_size)

    def histogram(self) -> dict[str, dict[int, float]]:
        """Share of groups at each width, over all weights and per weight kind."""
        kinds = torch.cat([torch.full((w.n_groups,), i) for i, w in enumerate(self.layout.weights)])
        names = [w.kind for w in self.layout.weights]
        out: dict[str, dict[int, float]] = {}
        for label in ["all", *sorted(set(names))]:
            idx = [i for i, n in enumerate(names) if label in ("all", n)]
            sel = torch.isin(kinds, torch.tensor(idx))
            w = self.widths[sel]
            pruning = self.config.prune or self.config.prune_neurons
            shown = (0, *self.config.widths) if pruning else self.config.widths
            out[label] = {b: round(float((w == b).float().mean()), 4) for b in shown}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "effective_bits": self.effective_bits,
            "quantized_weights": self.layout.numel,
            "groups": self.layout.n_groups,
            "unquantized": "embeddings, norms and the unembedding (outside the budget)",
            "recount": self.recount.to_dict() if self.recount else None,
            "histogram": self.histogram(),
            "protected_tasks": self.tasks,
            "top_heads": self.top_heads,
            "seconds": round(self.seconds, 1),
            "export": self.export,
        }


def calibration(model: HookedModel, config: CompressConfig, split: str = "train") -> list[Tensor]:
    """Token batches ``[8 seq_len]`` of the calibration corpus (``split``)."""
    from mechscope.corpus import batches, load_corpus

    return list(batches(load_corpus(config.corpus), model.tokenizer, batch_size=8, seq_len=config.seq_len,
                        n_tokens=config.calib_tokens, seed=config.seed, split=split))  # fmt: skip


def protected_batches(model: HookedModel, config: CompressConfig) -> dict[str, TaskBatch]:
    """Each protected task's prompts, after checking the model can do it."""
    out = {}
    for name in config.protect:
        batch = load_task(name, model, n=config.n_prompts, seed=config.seed).tokenize(model)
        value = evaluate(model, batch).clean_mean
        if value <= 0:
            raise MechscopeError(
                f"the model cannot do task {name!r} (clean logit difference {value:.2f} <= 0); "
                "protect a task it does"
            )
        out[name] = batch
    return out


def task_terms(
    model: HookedModel, layout: Layout, config: CompressConfig, batches: dict[str, TaskBatch],
    quiet: bool,
) -> tuple[Tensor | None, dict[str, dict[str, Tensor]], list[tuple[str, float]]]:  # fmt: skip
    """(group importance from node scores, task Fisher statistics, top heads) of the tasks."""
    if config.importance == "gradient":  # induction: the loss on the second copy, as evaluated
        rep = repeated_tokens(model, config.n_prompts, config.seed)
        stats = {f"task:{n}": repeated_fisher(model, layout, rep, quiet=quiet) if n == "induction"
                 else task_fisher(model, layout, b, logit_diff, quiet=quiet)
                 for n, b in batches.items()}  # fmt: skip
        return None, stats, []
    scores = [node_scores(model, b, method=config.attribution, steps=config.steps)
              for b in batches.values()]  # fmt: skip
    top = scores[0].top_heads() if len(scores) == 1 else []
    return task_importance(layout, scores, model.dims.d_head), {}, top


def neuron_mask(
    model: HookedModel, layout: Layout, config: CompressConfig, batches: list[Tensor],
    tasks: dict[str, TaskBatch], quiet: bool,
) -> Tensor:  # fmt: skip
    """[group] bool: the gate/up groups (and whole down groups) of the ``prune_neurons`` fraction
    of MLP neurons with the lowest removal score (:func:`prune.neuron_removal_score`: the LM
    term, plus the protected tasks' terms for the task methods: each prompt's logit difference,
    for ``induction`` each repeated-token sequence's loss)."""
    from mechscope.compress.prune import neuron_removal_score, select_units, unit_groups

    runs = []
    for name, b in tasks.items():
        if name == "induction":
            rep = repeated_tokens(model, config.n_prompts, config.seed)
            runs.append(lambda rep=rep: rep.losses(model.forward(rep.tokens)))
        else:
            runs.append(lambda b=b: logit_diff(model.forward(b.clean_tokens, b.clean_mask), b))
    score = neuron_removal_score(model, batches, runs, config.lm_weight,
                                 float(config.task_weight or 0), quiet=quiet)  # fmt: skip
    d = model.dims
    k = round(config.prune_neurons * score.numel())
    no_heads = torch.zeros(d.n_layers, d.n_heads)
    units = select_units(no_heads, score, d.n_heads, d.n_kv_heads, 0, k)
    return unit_groups(layout, units, d.d_head)


def plan(
    model: HookedModel,
    config: CompressConfig,
    calib: Iterable[Tensor] | None = None,
    *,
    quiet: bool = True,
) -> tuple[CompressResult, dict[str, Tensor]]:
    """Widths per group for ``config`` (nothing is quantized); also returns the Hessians when
    the quantizer is GPTQ."""
    start = time.perf_counter()
    layout = linear_weights(model, config.group_size)
    tasks = protected_batches(model, config) if config.method in TASK_METHODS else {}
    clean = {n: evaluate(model, b).clean_mean for n, b in tasks.items()}
    need = NEEDS.get(config.method)
    batches = list(calib) if calib is not None else None
    if batches is None and (need or config.quantizer == "gptq" or config.prune_neurons):
        batches = calibration(model, config)
    act, hess, fisher, grad = None, {}, None, None
    if need == "act" or config.quantizer == "gptq":
        act, hess = input_stats(model, layout, batches or [], hessian=config.quantizer == "gptq",
                                quiet=quiet)  # fmt: skip
    if need in ("fisher", "taylor"):
        fisher, grad = loss_grads(model, layout, batches or [], quiet=quiet)
    task, extra, top = task_terms(model, layout, config, tasks, quiet) if tasks else (None, {}, [])
    tables = error_tables(model, layout, config.widths, act=act, fisher=fisher, grad=grad,
                          extra=extra, quiet=quiet)  # fmt: skip
    del act, fisher, grad  # weight-sized statistics: the tables are all that is needed now
    if extra:
        ref = config.widths.index(3) if 3 in config.widths else 0
        tables["task"] = sum(normalised(tables.pop(k), ref) for k in extra)  # type: ignore[assignment]
    extra.clear()  # the tasks' weight-sized Fisher statistics
    d = model.dims
    pruned = None
    if config.prune_neurons:
        pruned = neuron_mask(model, layout, config, batches or [], tasks, quiet)
    inputs = Inputs(layout, config.widths, config.bits, tables, task, config.seed,
                    config.lm_weight, float(config.task_weight or 0), config.importance,
                    config.prune, (d.n_heads, d.n_kv_heads, d.d_head), pruned)  # fmt: skip
    widths = METHODS[config.method](inputs)
    result = CompressResult(config, layout, widths, None, clean, top,
                            time.perf_counter() - start)  # fmt: skip
    return result, hess


def compress(
    model: HookedModel,
    config: CompressConfig,
    out: str | Path | None = None,
    calib: Iterable[Tensor] | None = None,
    *,
    quiet: bool = True,
) -> CompressResult:
    """Plan, quantize ``model`` in place, recount the bits and export to ``out`` if given."""
    if out is not None and Path(out).exists():
        raise MechscopeError(f"output folder {out} exists; pass a new --out folder")
    start = time.perf_counter()
    result, hess = plan(model, config, calib, quiet=quiet)
    quantized = quantize_model(model, result.layout, result.widths, config.quantizer, hess,
                               keep=out is not None, quiet=quiet)  # fmt: skip
    counted = recount(model, result.layout, result.widths)
    result = CompressResult(config, result.layout, result.widths, counted, result.tasks,
                            result.top_heads, time.perf_counter() - start)  # fmt: skip
    if out is not None:
        summary = export(model, result.layout, quantized, result.to_dict(), out)
        result = CompressResult(config, result.layout, result.widths, counted, result.tasks,
                                result.top_heads, result.seconds, summary)  # fmt: skip
    return result
