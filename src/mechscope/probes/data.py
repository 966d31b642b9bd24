"""Labelled probing data: texts, one label each, and the token position to read.

A user file is JSONL, one object per line::

    {"text": "She bought 12", "label": "number"}
    {"text": "The keys near the cabinet", "label": "plural", "position": -1}
    {"text": "He walked the dog home", "label": "past", "token": "walked"}

``position`` is a token index into the text's own tokens (no BOS is added; negative counts from
the end; default -1, the last token). ``token`` instead names a substring of the text: the
position is the last token of its first occurrence. Labels are strings, numbers or booleans;
each distinct value is a class. Blank lines are skipped; bad lines (bytes that are not UTF-8, bad
JSON, NaN) raise a one-line :class:`~mechscope.errors.MechscopeError` with their line number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mechscope.errors import MechscopeError
from mechscope.files import read_jsonl as jsonl_lines

__all__ = ["FIELDS", "ProbeData", "from_rows", "read_jsonl"]

FIELDS = ("text", "label", "position", "token")
Label = str | int | float | bool


@dataclass(frozen=True, eq=False)
class ProbeData:
    """Labelled examples: ``texts[i]`` read at ``positions[i]`` (or after ``tokens[i]``)."""

    name: str  # the file or built-in set it came from
    texts: tuple[str, ...]
    labels: tuple[Label, ...]
    positions: tuple[int | None, ...]  # token index (negative from the end); None: use tokens[i]
    tokens: tuple[str | None, ...]  # substring whose last token is read; None: use positions[i]
    lines: tuple[int, ...]  # source line of each example (1-based), for error messages

    def __post_init__(self) -> None:
        n = len(self.texts)
        if not n:
            raise MechscopeError(f"probe data {self.name!r} has no examples; add some")
        for field in ("labels", "positions", "tokens", "lines"):
            if len(getattr(self, field)) != n:
                raise MechscopeError(
                    f"probe data {self.name!r}: {field} and texts differ in length"
                )
        if len(self.classes) < 2:
            raise MechscopeError(
                f"all {n} examples of {self.name!r} have the label {self.labels[0]!r}; "
                "a probe needs at least two classes"
            )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def classes(self) -> tuple[Label, ...]:
        """The distinct labels, sorted (by type name, then value) so class indices are stable."""
        return tuple(sorted(set(self.labels), key=lambda v: (type(v).__name__, v)))

    def label_ids(self) -> np.ndarray:
        """[n] the class index of every example."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[v] for v in self.labels], dtype=np.int64)

    def where(self, i: int) -> str:
        """How to name example ``i`` in an error message."""
        return f"{self.name} line {self.lines[i]}"


def from_rows(
    rows: Sequence[dict[str, Any]], name: str = "rows", lines: Sequence[int] = ()
) -> ProbeData:
    """Probe data from dicts with the keys of a JSONL line (checked like a file's lines)."""
    lines = list(lines) or list(range(1, len(rows) + 1))
    checked = [
        _check_row(row, f"{name} line {line}") for row, line in zip(rows, lines, strict=True)
    ]
    return ProbeData(
        name=name,
        texts=tuple(r["text"] for r in checked),
        labels=tuple(r["label"] for r in checked),
        positions=tuple(_position(r) for r in checked),
        tokens=tuple(r.get("token") for r in checked),
        lines=tuple(lines),
    )


def read_jsonl(path: str | Path) -> ProbeData:
    """The examples in a JSONL file (see the module docstring for the format)."""
    path = Path(path)
    if not path.is_file():
        raise MechscopeError(
            f"probe data file not found: {path}; pass a .jsonl file or builtin:NAME"
        )
    rows, lines = [], []
    for number, row in jsonl_lines(path):
        rows.append(row)
        lines.append(number)
    if not rows:
        raise MechscopeError(
            f"probe data file {path} is empty; write one JSON object per line with keys "
            '"text" and "label" (and optionally "position" or "token")'
        )
    return from_rows(rows, name=str(path), lines=lines)


def _position(row: dict[str, Any]) -> int | None:
    """The row's token index: its "position", None when it names a "token", else -1 (last)."""
    if row.get("token") is not None:
        return None
    position = row.get("position")
    return -1 if position is None else position


def _check_row(row: Any, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise MechscopeError(
            f"{where} is a JSON {type(row).__name__}, not an object; write "
            '{"text": ..., "label": ...}'
        )
    missing = [f for f in ("text", "label") if f not in row]
    if missing:
        raise MechscopeError(
            f"{where} lacks {', '.join(repr(m) for m in missing)}; every line needs "
            '"text" and "label"'
        )
    if not isinstance(row["text"], str) or not row["text"]:
        raise MechscopeError(f'{where}: "text" must be a non-empty string')
    label = row["label"]
    if not isinstance(label, str | int | float) or label is None:
        raise MechscopeError(f'{where}: "label" must be a string, number or boolean')
    if isinstance(label, float) and not math.isfinite(label):
        raise MechscopeError(f'{where}: "label" is {label!r}; use a string or a finite number')
    position, token = row.get("position"), row.get("token")
    if position is not None and (isinstance(position, bool) or not isinstance(position, int)):
        raise MechscopeError(
            f'{where}: "position" must be an integer token index, not {position!r}'
        )
    if token is not None:
        if position is not None:
            raise MechscopeError(f'{where}: give "position" or "token", not both')
        if not isinstance(token, str) or token not in row["text"]:
            raise MechscopeError(f'{where}: "token" {token!r} does not occur in the text')
    return row
