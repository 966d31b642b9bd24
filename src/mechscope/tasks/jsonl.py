"""User tasks from a JSONL file: one ``{"clean", "corrupt", "answer", "wrong"}`` object per line.

Prompts are text or lists of token ids; answers are text (mind the leading space: ``" Paris"``)
or token ids. Blank lines are skipped; other keys on a line are kept in ``meta["extra"]``. A bad
line (bytes that are not UTF-8, bad JSON) is a one-line error giving its line and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mechscope.errors import MechscopeError
from mechscope.files import read_jsonl as jsonl_lines
from mechscope.tasks.base import FIELDS, Task


def read_jsonl(path: str | Path, n: int | None = None) -> Task:
    """The task in ``path`` (its first ``n`` rows if given), named after the file."""
    path = Path(path)
    if not path.is_file():
        raise MechscopeError(f"task file not found: {path}")
    rows = [_check(path, number, row) for number, row in jsonl_lines(path)]
    if not rows:
        raise MechscopeError(
            f"task file {path} is empty; write one JSON object per line with keys "
            f"{', '.join(FIELDS)}"
        )
    if n is not None:
        if n < 1:
            raise MechscopeError(f"n must be at least 1, got {n}")
        rows = rows[:n]
    extra = [{k: v for k, v in row.items() if k not in FIELDS} for row in rows]
    meta: dict[str, Any] = {"source": str(path)}
    if any(extra):
        meta["extra"] = extra
    columns = {f: [row[f] for row in rows] for f in FIELDS}
    columns["clean"] = [_prompt(p) for p in columns["clean"]]
    columns["corrupt"] = [_prompt(p) for p in columns["corrupt"]]
    return Task(name=path.stem, **columns, meta=meta)


def _check(path: Path, number: int, row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise MechscopeError(
            f"{path} line {number} is a JSON {type(row).__name__}, not an object; write "
            f'{{"clean": ..., "corrupt": ..., "answer": ..., "wrong": ...}}'
        )
    missing = [f for f in FIELDS if f not in row]
    if missing:
        raise MechscopeError(
            f"{path} line {number} lacks {', '.join(repr(m) for m in missing)}; every line needs "
            f"{', '.join(FIELDS)}"
        )
    return row


def _prompt(prompt: Any) -> Any:
    """JSON arrays of token ids become tuples (as :data:`Prompt` expects); text stays text."""
    return tuple(prompt) if isinstance(prompt, list) else prompt
