"""Tasks and metrics: clean/corrupted prompt pairs with answers, and what to measure on them.

A :class:`Task` holds clean prompts, corrupted prompts and, per prompt, a correct and a wrong next
token; ``task.tokenize(model)`` gives a :class:`TaskBatch` of tensors. Built-in generators (one
file each, listed in :data:`TASKS`): ``ioi``, ``induction``, ``greater_than``, ``sva``,
``capitals``; :func:`load_task` takes one of those names or a ``.jsonl`` file of user pairs.
Metrics (:data:`METRICS`) are differentiable functions ``metric(logits, batch) -> [batch]``.

    task = load_task("ioi", model, n=16)
    batch = task.tokenize(model, require_uniform=True)
    scores = evaluate(model, batch)          # mean clean / corrupted logit difference
"""

from __future__ import annotations

from mechscope.tasks.base import Answer, Prompt, Task, TaskBatch, tokenize_task
from mechscope.tasks.evaluate import TaskScores, evaluate, run_logits
from mechscope.tasks.jsonl import read_jsonl
from mechscope.tasks.metrics import (
    METRICS,
    Metric,
    answer_logprob,
    answer_prob,
    get_metric,
    kl_to_clean,
    logit_diff,
    normalized,
    prob_diff,
)
from mechscope.tasks.registry import TASKS, load_task

__all__ = [
    "METRICS",
    "TASKS",
    "Answer",
    "Metric",
    "Prompt",
    "Task",
    "TaskBatch",
    "TaskScores",
    "answer_logprob",
    "answer_prob",
    "evaluate",
    "get_metric",
    "kl_to_clean",
    "load_task",
    "logit_diff",
    "normalized",
    "prob_diff",
    "read_jsonl",
    "run_logits",
    "tokenize_task",
]
