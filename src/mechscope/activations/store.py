"""Reading an activation store: its manifest, its shards and training batches.

A store is a folder with ``manifest.json`` and ``shard-00000.safetensors``, ... (each shard holds one
``[n_tokens d]`` tensor per site, named by the site). Opening checks the manifest and that every
listed shard exists with the recorded size; :meth:`ActivationStore.verify` (or ``verify=True`` when
loading) also checks sha256 hashes. See docs/activations.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from mechscope.activations.manifest import Manifest, ShardInfo, read_manifest
from mechscope.errors import MechscopeError
from mechscope.files import sha256_file

__all__ = ["ActivationStore", "shard_name"]

Batch = Tensor | tuple[Tensor, ...]


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


class ActivationStore:
    """A harvested store: ``manifest`` plus access to its shards. Build it with :meth:`open`."""

    def __init__(self, folder: Path, manifest: Manifest) -> None:
        self.folder = folder
        self.manifest = manifest

    @classmethod
    def open(
        cls, folder: str | os.PathLike[str], *, verify: bool = False, allow_partial: bool = False
    ) -> ActivationStore:
        """Open ``folder``; ``verify`` hashes every shard now; ``allow_partial`` reads a harvest
        that is still running or was interrupted (its complete shards only)."""
        path = Path(folder)
        manifest = read_manifest(path)
        if not manifest.complete and not allow_partial:
            raise MechscopeError(
                f"the harvest in {path} is not complete ({len(manifest.shards)} shards, "
                f"{manifest.n_tokens} of {manifest.config['n_tokens']} tokens); run the same "
                "`mechscope harvest` command again to finish it"
            )
        store = cls(path, manifest)
        for shard in manifest.shards:
            store._check_size(shard)
        if verify:
            store.verify()
        return store

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"ActivationStore({self.folder}: {', '.join(m.sites)}, {m.n_tokens} tokens, "
            f"{len(m.shards)} shards, {m.dtype})"
        )

    @property
    def sites(self) -> list[str]:
        return self.manifest.sites

    @property
    def n_tokens(self) -> int:
        return self.manifest.n_tokens

    @property
    def norm_scale(self) -> float | None:
        return self.manifest.norm_scale

    def _check_size(self, shard: ShardInfo) -> None:
        path = self.folder / shard.file
        if not path.is_file():
            raise MechscopeError(
                f"shard {shard.file} is missing from {self.folder}; run the same "
                "`mechscope harvest` command again to rebuild it"
            )
        size = path.stat().st_size
        if size != shard.bytes:
            raise MechscopeError(
                f"shard {shard.file} in {self.folder} is truncated or damaged ({size} bytes, the "
                f"manifest says {shard.bytes}); run the same `mechscope harvest` command again"
            )

    def verify(self) -> None:
        """Check every shard's size and sha256 against the manifest."""
        for shard in self.manifest.shards:
            self._check_size(shard)
            if sha256_file(self.folder / shard.file) != shard.sha256:
                raise MechscopeError(
                    f"shard {shard.file} in {self.folder} does not match its sha256 in the "
                    "manifest; delete it and run the same `mechscope harvest` command again"
                )

    def load_shard(self, position: int) -> dict[str, Tensor]:
        """The tensors ``{site: [n_tokens d]}`` of the ``position``-th listed shard."""
        shard = self.manifest.shards[position]
        self._check_size(shard)
        try:
            tensors = load_file(str(self.folder / shard.file))
        except (SafetensorError, OSError) as exc:
            raise MechscopeError(
                f"cannot read shard {shard.file} in {self.folder} ({exc}); run the same "
                "`mechscope harvest` command again to rebuild it"
            ) from None
        for site in self.sites:
            t = tensors.get(site)
            if t is None or tuple(t.shape) != (shard.n_tokens, self.manifest.dims[site]):
                raise MechscopeError(
                    f"shard {shard.file} does not hold [{shard.n_tokens}, "
                    f"{self.manifest.dims[site]}] for {site}; harvest again into a new folder"
                )
        return tensors

    def tensor(self, site: str | None = None) -> Tensor:
        """Every row of ``site`` (default: the first) in harvest order, as one tensor (small stores)."""
        site = site or self.sites[0]
        if site not in self.sites:
            raise MechscopeError(f"this store has no site {site!r}; it has {', '.join(self.sites)}")
        return torch.cat([self.load_shard(i)[site] for i in range(len(self.manifest.shards))])

    def batches(
        self,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        normalize: bool = False,
        loop: bool = False,
        drop_last: bool = False,
        mix_shards: int = 4,
        dtype: torch.dtype = torch.float32,
    ) -> Iterator[Batch]:
        """Training batches ``[batch d]`` (a tuple of them for several sites), shuffled across shards.

        See :func:`mechscope.activations.reader.batches`; ``normalize`` multiplies each site by its
        norm scale (leave it off when the SAE applies ``normalize_scale`` itself).
        """
        from mechscope.activations.reader import batches

        return batches(
            self,
            batch_size,
            seed=seed,
            shuffle=shuffle,
            normalize=normalize,
            loop=loop,
            drop_last=drop_last,
            mix_shards=mix_shards,
            dtype=dtype,
        )
