"""The ``mechscope`` command: a thin click layer over the library.

Each command group lives in its own module and is added to :data:`cli` here. Bad input (any
:class:`~mechscope.errors.MechscopeError`) prints one line ``error: <message>`` on stderr and exits
with code 2, like click's own usage errors; nothing prints a traceback for it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from mechscope import __version__
from mechscope.cli.common import UserError
from mechscope.errors import MechscopeError

# name -> "module:attribute"; a command's module is imported only when it runs (or --help lists it)
COMMANDS = {
    "info": "mechscope.cli.info:info",
    "report": "mechscope.cli.report:report",
    "patch": "mechscope.cli.patch:patch",
    "dla": "mechscope.cli.dla:dla",
    "ablate": "mechscope.cli.ablate:ablate",
    "circuit": "mechscope.cli.circuit:circuit",
    "heads": "mechscope.cli.heads:heads",
    "attention": "mechscope.cli.attention:attention",
    "lens": "mechscope.cli.lens:lens",
    "probe": "mechscope.cli.probe:probe",
    "neurons": "mechscope.cli.neurons:neurons",
    "harvest": "mechscope.cli.harvest:harvest",
    "sae": "mechscope.cli.sae:sae",
    "steer": "mechscope.cli.steer:steer",
    "toy": "mechscope.cli.toy:toy",
    "features": "mechscope.cli.features:features",
    "serve": "mechscope.cli.serve:serve",
    "explain": "mechscope.cli.explain:explain",
    "score": "mechscope.cli.score:score",
    "graph": "mechscope.cli.graph:graph",
    "das": "mechscope.cli.das:das",
    "compress": "mechscope.cli.compress:compress",
    "moe": "mechscope.cli.moe:moe",
    "compare": "mechscope.cli.compare:compare",
    "diff": "mechscope.cli.diff:diff",
    "anomaly": "mechscope.cli.anomaly:anomaly",
    "audit": "mechscope.cli.audit:audit",
}


def _load_command(name: str) -> click.Command | None:
    module, _, attr = COMMANDS[name].partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        if exc.name == module:  # the command's module is not installed: leave it out
            return None
        raise


def _usage_line(exc: click.UsageError) -> str:
    """Click's usage error as one line: the message (valid choices on the same line) and where
    to read more, instead of click's usage block."""
    text = " ".join(part.strip() for part in exc.format_message().splitlines() if part.strip())
    text = text.replace(". Choose from:", "; choose from:").rstrip(".")
    ctx = exc.ctx
    if ctx is not None and isinstance(ctx.command, click.Group) and "No such command" in text:
        text += f"; commands: {', '.join(ctx.command.list_commands(ctx))}"
    path = ctx.command_path if ctx is not None else "mechscope"
    return f"{text[:1].lower()}{text[1:]} (see '{path} --help')"


class _Group(click.Group):
    """Commands from :data:`COMMANDS`, loaded lazily.

    Turns a :class:`MechscopeError` raised by any command, and click's usage errors (a bad
    choice, a missing option, a bad type), into a one-line exit-2 error.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _load_command(name) is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _load_command(cmd_name) if cmd_name in COMMANDS else None

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            raise UserError(_usage_line(exc)) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MechscopeError as exc:
            raise UserError(str(exc)) from None
        except click.UsageError as exc:
            raise UserError(_usage_line(exc)) from None


@click.group("mechscope", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mechscope")
def cli() -> None:
    """Mechanistic interpretability for Hugging Face causal language models.

    MODEL is a hub id, a local folder, a .gguf file or the alias smollm2-135m (built in).
    """


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``mechscope``)."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="mechscope")
    except MechscopeError as exc:  # raised outside a command, e.g. while parsing
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
