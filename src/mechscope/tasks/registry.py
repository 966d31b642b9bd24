"""The built-in task generators by name, and :func:`load_task` for names and JSONL files.

Every generator has the signature ``make_<name>(tokenizer, n, seed=0, **options) -> Task``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from mechscope.errors import MechscopeError
from mechscope.tasks.arithmetic import make_arithmetic
from mechscope.tasks.base import Task
from mechscope.tasks.capitals import make_capitals
from mechscope.tasks.greater_than import make_greater_than
from mechscope.tasks.induction import make_induction
from mechscope.tasks.ioi import make_ioi
from mechscope.tasks.jsonl import read_jsonl
from mechscope.tasks.mcqa import make_mcqa
from mechscope.tasks.sva import make_sva

TASKS: dict[str, Callable[..., Task]] = {
    "ioi": make_ioi,
    "ioi-swap": partial(make_ioi, corruption="swap"),
    "induction": make_induction,
    "greater_than": make_greater_than,
    "sva": make_sva,
    "capitals": make_capitals,
    "arithmetic": make_arithmetic,
    "arithmetic-sub": partial(make_arithmetic, operator="-"),
    "mcqa": make_mcqa,
}
DEFAULT_N = 32


def load_task(
    name_or_path: str | Path,
    tokenizer: Any,
    n: int | None = None,
    seed: int = 0,
    *,
    require_same_length: bool = True,
    **options: Any,
) -> Task:
    """A built-in task by name (``n`` prompts, default 32) or a user task from a ``.jsonl`` file.

    ``tokenizer`` may be a tokenizer or a model that has one (None works only for tasks of
    token ids). A file task is checked at once, so a bad answer or an unequal pair fails here;
    ``n`` keeps its first ``n`` rows, and ``options`` apply to built-in generators only.
    """
    name = str(name_or_path)
    if name in TASKS:
        return TASKS[name](tokenizer, DEFAULT_N if n is None else n, seed, **options)
    if not (name.endswith(".jsonl") or Path(name).exists()):
        raise MechscopeError(
            f"unknown task {name!r}; choose one of {', '.join(TASKS)}, or pass a .jsonl file"
        )
    if options:
        raise MechscopeError(
            f"options {', '.join(sorted(options))} apply to built-in tasks, not to a file"
        )
    task = read_jsonl(name, n)
    task.tokenize(tokenizer, require_same_length=require_same_length)
    return task
