"""Progress for long work: tqdm bars with rate and ETA when someone is watching, else step lines.

Bars go to stderr and are switched off by ``quiet=True``, by the environment variable ``CI`` (any
value but ``""``, ``0`` or ``false``), and whenever stderr is not a terminal, so logs and piped
output stay clean while interactive runs keep their bars. :func:`steps` walks a few long steps
(a report's sections): a bar naming the current step on a terminal, otherwise one line per step
with its time on stderr (``report: [3/9] Tuned lens 41.2 s``), nothing when quiet.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

__all__ = ["bars_enabled", "progress", "steps"]


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


def steps(
    items: Sequence[T], name: Callable[[T], str], *, desc: str, quiet: bool = False
) -> Iterator[T]:
    """Yield ``items``, showing the step being run (a bar) or, without a terminal, printing one
    line per finished step with the seconds it took (the time between its yield and the next)."""
    lines = not quiet and not bars_enabled()
    bar = progress(items, total=len(items), desc=desc, quiet=quiet, unit="step")
    for i, item in enumerate(bar, 1):
        bar.set_postfix_str(name(item))
        start = time.perf_counter()
        yield item
        if lines:
            took = time.perf_counter() - start
            print(
                f"{desc}: [{i}/{len(items)}] {name(item)} {took:.1f} s", file=sys.stderr, flush=True
            )
