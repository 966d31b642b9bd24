"""The manifest of an activation store: what was harvested, and which shards are complete.

``manifest.json`` is the only source of truth about a store. It is rewritten atomically (temporary
file, fsync, ``os.replace``) after every shard, so at any moment it lists exactly the shards that are
complete on disk; a shard file it does not list is a leftover of a crash and is overwritten.

Keys (see docs/activations.md): ``format``, ``config`` (everything that decides the stored values:
model, sites, dtype, corpus, seed, seq_len, whether each window's first position is stored
(``include_first``), batch size, shard size, token count), ``dims`` (width of
each site), ``shards`` (file, rows, bytes, sha256, per-site sum of squared norms), ``n_tokens``
(rows in complete shards), ``complete``, ``exhausted`` (the corpus ran out early) and
``norm_scales`` (per site, ``1 / sqrt(mean ||x||^2)``: multiplying by it gives unit mean squared
norm; written when the harvest completes).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mechscope.errors import MechscopeError
from mechscope.files import write_atomic

__all__ = ["FORMAT", "MANIFEST", "Manifest", "ShardInfo", "read_manifest", "write_atomic"]

FORMAT = "mechscope-activations/1"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ShardInfo:
    """One complete shard file: ``n_tokens`` rows of every site."""

    index: int
    file: str
    n_tokens: int
    bytes: int
    sha256: str
    sum_sq: dict[str, float]  # site -> sum over rows of ||x||^2 (float64)


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json`` of a store."""

    config: dict[str, Any]
    dims: dict[str, int]
    shards: tuple[ShardInfo, ...] = ()
    complete: bool = False
    exhausted: bool = False
    norm_scales: dict[str, float] | None = None
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)  # provenance (model path, versions)

    @property
    def sites(self) -> list[str]:
        return list(self.config["sites"])

    @property
    def n_tokens(self) -> int:
        """Rows of each site in complete shards."""
        return sum(s.n_tokens for s in self.shards)

    @property
    def d_in(self) -> int:
        """Width of the first site (the SAE or transcoder input)."""
        return self.dims[self.sites[0]]

    @property
    def d_out(self) -> int | None:
        """Width of the second site (a transcoder's output), or None for one site."""
        return self.dims[self.sites[1]] if len(self.sites) > 1 else None

    @property
    def norm_scale(self) -> float | None:
        """The first site's unit-mean-squared-norm factor (``SAEConfig.normalize_scale``)."""
        return None if self.norm_scales is None else self.norm_scales[self.sites[0]]

    @property
    def include_first(self) -> bool:
        """Whether the rows include each window's first position (older stores: unless BOS)."""
        return bool(self.config.get("include_first", not self.config.get("prepend_bos", False)))

    @property
    def dtype(self) -> str:
        return str(self.config["dtype"])

    @property
    def content_id(self) -> str:
        """A short hash of the config and every shard's sha256: equal ids mean equal rows."""
        text = json.dumps([self.config, [s.sha256 for s in self.shards]], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def with_shard(self, shard: ShardInfo) -> Manifest:
        """A copy listing ``shard`` too (replacing an entry with the same index)."""
        kept = [s for s in self.shards if s.index != shard.index]
        shards = tuple(sorted([*kept, shard], key=lambda s: s.index))
        return Manifest(self.config, self.dims, shards, format=self.format, extra=self.extra)

    def finished(self, *, exhausted: bool) -> Manifest:
        """A copy marked complete, with the norm scales computed from the shards' sums."""
        scales = {}
        for site in self.sites:
            total = sum(s.sum_sq[site] for s in self.shards)
            mean = total / max(self.n_tokens, 1)
            scales[site] = 1.0 / math.sqrt(mean) if mean > 0 else 1.0
        return Manifest(
            self.config, self.dims, self.shards, True, exhausted, scales, self.format, self.extra
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "config": self.config,
            "dims": self.dims,
            "d_in": self.d_in,
            "d_out": self.d_out,
            "n_tokens": self.n_tokens,
            "complete": self.complete,
            "exhausted": self.exhausted,
            "norm_scale": self.norm_scale,
            "norm_scales": self.norm_scales,
            "shards": [asdict(s) for s in self.shards],
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(
            config=dict(data["config"]),
            dims={k: int(v) for k, v in data["dims"].items()},
            shards=tuple(ShardInfo(**s) for s in data["shards"]),
            complete=bool(data["complete"]),
            exhausted=bool(data.get("exhausted", False)),
            norm_scales=data.get("norm_scales"),
            format=data["format"],
            extra=dict(data.get("extra", {})),
        )


def save_manifest(folder: Path, manifest: Manifest) -> None:
    text = json.dumps(manifest.to_json(), indent=1, sort_keys=True) + "\n"
    write_atomic(folder / MANIFEST, text.encode())


def read_manifest(folder: str | os.PathLike[str]) -> Manifest:
    """Parse ``folder/manifest.json``; a missing or damaged one is a :class:`MechscopeError`."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise MechscopeError(
            f"{folder} is not an activation store (no {MANIFEST}); run `mechscope harvest` first"
        )
    try:
        data = json.loads(path.read_text())
        manifest = Manifest.from_json(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise MechscopeError(
            f"{path} is damaged ({exc}); harvest again into a new folder"
        ) from None
    if manifest.format != FORMAT:
        raise MechscopeError(
            f"{path} has format {manifest.format!r}, this mechscope reads {FORMAT!r}; harvest again"
        )
    return manifest
