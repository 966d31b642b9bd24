"""Progress bars for long loops: tqdm with rate and ETA, shown only when someone is watching.

Bars go to stderr and are switched off by ``quiet=True``, by the environment variable ``CI`` (any
value but ``""``, ``0`` or ``false``), and whenever stderr is not a terminal, so logs and piped
output stay clean while interactive runs keep their bars.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

__all__ = ["bars_enabled", "progress"]


def bars_enabled(quiet: bool = False) -> bool:
    """Whether progress bars should be drawn (not quiet, not CI, stderr is a terminal)."""
    if quiet or os.environ.get("CI", "").strip().lower() not in ("", "0", "false"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    *,
    desc: str | None = None,
    quiet: bool = False,
    unit: str = "it",
) -> tqdm:
    """Wrap ``iterable`` in a tqdm bar on stderr (a silent pass-through when disabled).

    The returned object iterates like ``iterable``; ``.set_postfix_str(text)`` names the step.
    """
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not bars_enabled(quiet),
        dynamic_ncols=True,
        leave=False,
    )
