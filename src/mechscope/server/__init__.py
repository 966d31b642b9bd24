"""The web UI over a feature database (``mechscope serve``): :func:`create_app`. See
docs/features.md."""

from mechscope.server.app import create_app

__all__ = ["create_app"]
