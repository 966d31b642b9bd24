"""Progress for long work: tqdm bars with rate and ETA when someone is watching, else step lines.

Bars go to stderr and are switched off by ``quiet=True``, by the environment variable ``CI`` (any
value but ``""``, ``0`` or ``false``), and whenever stderr is not a terminal, so logs and piped
output stay clean while interactive runs keep their bars. Without a bar, long work still reports
itself: a line every :data:`LINE_INTERVAL` seconds (``compare: 12,288/100,000 tok (12%), 41.0
tok/s, ETA 35:40``; ``MECHSCOPE_PROGRESS_INTERVAL`` overrides it) and a last line when it ends,
none for work shorter than the interval. :func:`steps` walks a few long steps (a report's
sections): a bar naming the current step on a terminal, otherwise one line per step with its time
on stderr (``report: [3/9] Tuned lens 41.2 s``), nothing when quiet.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

__all__ = ["LINE_INTERVAL", "bars_enabled", "progress", "steps"]

LINE_INTERVAL = 30.0
"""Seconds between two progress lines when stderr is not a terminal."""


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
    lines: bool = True,
) -> tqdm:
    """Wrap ``iterable`` in a tqdm bar on stderr.

    Without a terminal (and not quiet) the bar becomes a line every :data:`LINE_INTERVAL`
    seconds plus a last one, for work that outlasts the interval (``lines=False``: silent).
    The returned object iterates like ``iterable``; ``.set_postfix_str(text)`` names the step.
    """
    if not bars_enabled(quiet):
        if quiet or not lines:
            return tqdm(iterable, total=total, disable=True)
        interval = float(os.environ.get("MECHSCOPE_PROGRESS_INTERVAL", LINE_INTERVAL))
        return _Lines(iterable, total=total, desc=desc, unit=unit, interval=interval)
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )


class _Lines(tqdm):
    """A tqdm whose every display is one whole line on stderr, at most one per ``interval``
    seconds; ``close`` prints a last line (with the time taken) when an earlier one was printed."""

    def __init__(self, iterable, *, interval: float, **kwargs) -> None:
        self._interval = interval
        self._shown: int | None = None  # the count on the last printed line
        super().__init__(
            iterable,
            file=sys.stderr,
            mininterval=interval,
            maxinterval=interval,
            leave=False,
            **kwargs,
        )

    def line(self, final: bool = False) -> str:
        d = self.format_dict
        n, total, elapsed, unit = d["n"], d["total"], d["elapsed"], d["unit"]
        text = f"{d['prefix'] or 'progress'}: {n:,}" + (f"/{total:,}" if total else "") + f" {unit}"
        if total:
            text += f" ({100 * n / total:.0f}%)"
        rate = n / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            text += f", {rate:,.1f} {unit}/s"
        if final:
            text += f", {self.format_interval(elapsed)} elapsed"
        elif total and rate > 0:
            text += f", ETA {self.format_interval((total - n) / rate)}"
        return text + (f" [{d['postfix']}]" if d.get("postfix") else "")

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":
            return False  # tqdm clearing its line: nothing to clear
        if self.n == 0 or self.format_dict["elapsed"] < self._interval:
            return True  # its first draw, or work still shorter than the interval
        print(self.line(), file=sys.stderr, flush=True)
        self._shown = self.n
        return True

    def close(self) -> None:
        if not self.disable and self._shown is not None:
            print(self.line(final=True), file=sys.stderr, flush=True)
            self._shown = None
        super().close()


def steps(
    items: Sequence[T], name: Callable[[T], str], *, desc: str, quiet: bool = False
) -> Iterator[T]:
    """Yield ``items``, showing the step being run (a bar) or, without a terminal, printing one
    line per finished step with the seconds it took (the time between its yield and the next)."""
    lines = not quiet and not bars_enabled()
    bar = progress(items, total=len(items), desc=desc, quiet=quiet, unit="step", lines=False)
    for i, item in enumerate(bar, 1):
        bar.set_postfix_str(name(item))
        start = time.perf_counter()
        yield item
        if lines:
            took = time.perf_counter() - start
            print(
                f"{desc}: [{i}/{len(items)}] {name(item)} {took:.1f} s", file=sys.stderr, flush=True
            )
