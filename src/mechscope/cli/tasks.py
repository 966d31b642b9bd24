"""What the commands over a task share: the task options, the tokenised batch and its metric.

``patch``, ``dla``, ``ablate`` and ``circuit`` take ``--model --task --n --seed --metric``
(:func:`task_options`), load the task as an aligned :class:`~mechscope.tasks.base.TaskBatch`
(:func:`load_task_batch`) and measure a :class:`~mechscope.tasks.metrics.Metric`
``metric(logits, batch)`` (:func:`task_metric`), the one call form of every analysis.
"""

from __future__ import annotations

from typing import Any

import click

from mechscope import DEFAULT_MODEL

METRIC_NAMES = ["logit_diff", "prob", "logprob", "kl"]


def task_options(fn: Any) -> Any:
    """--model, --task, --n, --seed, --metric: shared by the circuit commands."""
    for option in reversed(
        [
            click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True),
            click.option(
                "--task",
                "-t",
                default="ioi",
                show_default=True,
                help="ioi, ioi-swap, induction, greater_than, sva, capitals, or a .jsonl file "
                '({"clean", "corrupt", "answer", "wrong"} per line).',
            ),
            click.option("--n", "n", default=8, show_default=True, help="Number of prompts."),
            click.option("--seed", default=0, show_default=True),
            click.option(
                "--metric", type=click.Choice(METRIC_NAMES), default="logit_diff", show_default=True
            ),
        ]
    ):
        fn = option(fn)
    return fn


def load_task_batch(model: Any, task: str, n: int, seed: int, prepend_bos: bool = False) -> Any:
    """The task's prompts as a TaskBatch whose clean and corrupted prompts align."""
    from mechscope.tasks import load_task

    loaded = load_task(task, model, n=n, seed=seed)
    return loaded.tokenize(model, require_same_length=True, prepend_bos=prepend_bos)


def task_metric(model: Any, batch: Any, name: str) -> Any:
    """The metric ``name`` as ``metric(logits, batch)``; ``kl`` is bound to the clean run."""
    from mechscope.tasks.metrics import get_metric

    clean_logits = None
    if name == "kl":
        import torch

        with torch.no_grad():
            clean_logits = model.forward(batch.clean_tokens, attention_mask=batch.clean_mask)
    return get_metric(name, clean_logits)
