"""What every command shares: the one-line error, model loading and shared options."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

import click

import mechscope
from mechscope.errors import MechscopeError

if TYPE_CHECKING:
    from mechscope.models.hooked import HookedModel

__all__ = ["UserError", "load_model", "quiet_option"]

quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")


class UserError(click.ClickException):
    """Bad input: printed as one line ``error: <message>`` on stderr, exit code 2."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def _hf_errors_only() -> Iterator[None]:
    """Keep transformers' and the hub's load-time warnings (and retry notices) off the terminal.

    Errors still surface, as one line, through :func:`load_model`.
    """
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    levels = hf_logging.get_verbosity(), hub_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hub_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(levels[0])
        hub_logging.set_verbosity(levels[1])


def load_model(name: str, *, quiet: bool = False) -> HookedModel:
    """``mechscope.load`` for the CLI: a model that cannot be loaded is a :class:`MechscopeError`."""
    from mechscope.progress import bars_enabled

    try:
        with _hf_errors_only():
            return mechscope.load(name, progress=bars_enabled(quiet))
    except MechscopeError:
        raise
    except (OSError, ValueError, KeyError) as exc:  # transformers' errors for a bad model
        raise MechscopeError(f"cannot load model {name!r}: {_first_line(exc)}") from exc


# -- output files (shared by every command that writes JSON) -------------------------------------


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON to ``path`` (nothing if None) and say so on stderr."""
    if path:
        import json
        from pathlib import Path

        Path(path).write_text(json.dumps(payload, indent=1))
        click.echo(f"wrote {path}", err=True)
