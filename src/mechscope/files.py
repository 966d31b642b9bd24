"""Where mechscope keeps what it computes once, and how it names file contents.

``cache_root()`` is ``$MECHSCOPE_CACHE`` when set (and not empty), else ``~/.cache/mechscope``: the
GGUF conversions, corpus token caches, tuned lenses and the report's SAE all live below it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["cache_root", "sha256_file"]


def cache_root() -> Path:
    """The root folder of mechscope's caches."""
    return Path(os.environ.get("MECHSCOPE_CACHE") or "~/.cache/mechscope").expanduser()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
