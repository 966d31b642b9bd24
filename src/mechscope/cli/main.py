"""The ``mechscope`` command: a thin click layer over the library.

Each command group lives in its own module and is added to :data:`cli` here. Bad input (any
:class:`~mechscope.errors.MechscopeError`) prints one line ``error: <message>`` on stderr and exits
with code 2, like click's own usage errors; nothing prints a traceback for it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from mechscope import __version__
from mechscope.cli.circuit import circuit
from mechscope.cli.common import UserError
from mechscope.cli.dla import ablate, dla
from mechscope.cli.info import info
from mechscope.cli.patch import patch
from mechscope.cli.report import report
from mechscope.errors import MechscopeError


class _Group(click.Group):
    """Turns a :class:`MechscopeError` raised by any command into a one-line exit-2 error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MechscopeError as exc:
            raise UserError(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mechscope")
def cli() -> None:
    """Mechanistic interpretability for Hugging Face causal language models.

    MODEL is a hub id, a local folder, a .gguf file or the alias smollm2-135m (built in).
    """


cli.add_command(info)
cli.add_command(report)
cli.add_command(patch)
cli.add_command(dla)
cli.add_command(ablate)
cli.add_command(circuit)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``mechscope``)."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="mechscope")
    except MechscopeError as exc:  # raised outside a command, e.g. while parsing
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
