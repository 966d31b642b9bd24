"""The activation cache: a plain mapping from site name to tensor, holding only what was asked."""

from __future__ import annotations

import fnmatch

import torch


class Cache(dict):
    """``{site name: tensor}``. A missing name raises ``KeyError`` listing what is cached."""

    def __missing__(self, key: str) -> torch.Tensor:
        have = ", ".join(list(self)[:6]) + (" ..." if len(self) > 6 else "")
        raise KeyError(f"{key!r} was not cached; cache it with names=[...]; cached: {have}")


def stack(cache: dict[str, torch.Tensor], pattern: str) -> torch.Tensor:
    """Stack the cached sites matching a glob, in layer order: [layer *site_shape].

    Example: ``stack(cache, "blocks.*.hook_resid_post")``.
    """
    names = fnmatch.filter(cache, pattern)
    if not names:
        raise KeyError(f"no cached site matches {pattern!r}")

    def layer(name: str) -> int:
        return int(name.split(".")[1]) if name.startswith("blocks.") else -1

    return torch.stack([cache[n] for n in sorted(names, key=layer)])
