"""``mechscope serve``: browse a feature database in a web browser."""

from __future__ import annotations

import os

import click

from mechscope.cli.common import quiet_option

LOCAL = ("127.0.0.1", "localhost", "::1")


@click.command()
@click.argument("db")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; any other than 127.0.0.1 needs a token.")  # fmt: skip
@click.option("--port", "-p", default=8000, show_default=True)
@click.option("--token", default=None, help="Access token checked on every request [$MECHSCOPE_TOKEN].")  # fmt: skip
@click.option("--model", "-m", default=None, help="Model for 'try a text' [the database's].")
@click.option("--graphs", default=None, type=click.Path(file_okay=False), help="Folder of graph JSON (mechscope graph --out) shown at /graphs.")  # fmt: skip
@quiet_option
def serve(db: str, host: str, port: int, token: str | None, model: str | None, graphs: str | None, quiet: bool) -> None:  # fmt: skip
    """Serve the feature database DB (a file or a postgresql:// URL) read-only: pages and JSON API."""
    from mechscope.errors import MechscopeError

    token = token or os.environ.get("MECHSCOPE_TOKEN") or None
    if host not in LOCAL and not token:
        raise MechscopeError(
            f"binding {host} exposes the database to the network; pass --token or set "
            "MECHSCOPE_TOKEN (or bind 127.0.0.1)"
        )
    if token is not None and len(token) < 16:
        raise MechscopeError("the access token is too short; use at least 16 characters")
    if not 0 < port < 65536:
        raise MechscopeError(f"--port must lie in 1..65535, got {port}")
    import uvicorn

    from mechscope.cli.common import load_model
    from mechscope.server import create_app

    app = create_app(db, token=token, load_model=lambda name: load_model(model or name, quiet=True), graphs=graphs)  # fmt: skip
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    if not quiet:
        click.echo(f"serving {db} read-only at {url} (Ctrl-C stops)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


__all__ = ["serve"]
