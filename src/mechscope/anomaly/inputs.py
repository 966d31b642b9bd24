"""The inputs an anomaly detector scores: one per document, in the order of the corpus.

A ``.jsonl`` file gives one input per line (field ``text``; blank lines are skipped, so an input's
index is its position among the JSON lines); any other file is one input; a folder gives its
files sorted by path (recursively), each read the same way. Text must be
UTF-8 without NUL bytes: a binary file is a one-line error naming it, not a silent garbage input.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mechscope.errors import MechscopeError
from mechscope.files import read_jsonl

__all__ = ["read_inputs"]

SKIPPED = {".lock"}


def _text_file(path: Path) -> str:
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise MechscopeError(f"{path} is not a text file (it holds NUL bytes); pass UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MechscopeError(
            f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "pass UTF-8 text"
        ) from None


def _jsonl(path: Path, text_field: str) -> Iterator[str]:
    for number, row in read_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise MechscopeError(
                f"{path} line {number} has no string field {text_field!r}; pass --text-field "
                "with the field that holds the text"
            )
        yield row[text_field]


def read_inputs(path: str | Path, text_field: str = "text") -> list[str]:
    """Every input of ``path`` (a JSONL file, a text file or a folder), in order."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MechscopeError(f"corpus not found: {path}")
    files = (
        sorted(p for p in path.rglob("*") if p.is_file() and p.suffix not in SKIPPED)
        if path.is_dir()
        else [path]
    )
    texts: list[str] = []
    for file in files:
        if file.suffix.lower() == ".jsonl":
            texts.extend(_jsonl(file, text_field))
        else:
            texts.append(_text_file(file))
    if not texts:
        raise MechscopeError(f"{path} holds no input; pass a JSONL file, a text file or a folder")
    return texts
