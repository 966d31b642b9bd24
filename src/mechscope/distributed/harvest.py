"""``harvest`` across ranks: the same store as :func:`mechscope.activations.harvest`.

Steps (every rank runs the same model on the same corpus):

1. rank 0 takes the folder lock, checks the folder against the config and writes the starting
   manifest exactly as the one-process harvest does; the others wait for it (a failure there is
   raised on every rank);
2. every rank cuts the same deterministic window stream into the same shards; shard ``i`` is run
   and written (atomically) by rank ``i % world`` only;
3. after each round of ``world`` shards the ranks exchange the shards' records
   (``all_gather_object``) and rank 0 adds them to the manifest and saves it, so a run killed at
   any moment resumes from the last complete round (shard files of a partial round are unlisted
   and rewritten);
4. rank 0 marks the store complete; every rank returns ``ActivationStore.open(out)``.

Shard contents depend only on the shard index and the config (batches are cut inside a shard), so
the shards, their sha256 and the manifest equal a one-process harvest's.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from mechscope.activations.manifest import Manifest, save_manifest
from mechscope.activations.store import ActivationStore
from mechscope.corpus import Corpus, windows
from mechscope.distributed import broadcast_error, init, rank, world_size
from mechscope.files import folder_lock
from mechscope.progress import bars_enabled

__all__ = ["harvest"]

# the module, not the function of the same name that mechscope.activations exports
_h = importlib.import_module("mechscope.activations.harvest")


def harvest(
    model: Any,
    sites: str | Sequence[str],
    corpus: Corpus,
    n_tokens: int,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    **kw: Any,
) -> ActivationStore:
    """:func:`mechscope.activations.harvest` sharded over the ranks of a torchrun launch (same
    arguments; with one process it is that function)."""
    if not init():
        return _h.harvest(model, sites, corpus, n_tokens, out_dir, progress=progress, **kw)
    folder = Path(out_dir)
    with contextlib.ExitStack() as stack:
        manifest, error = None, None
        if rank() == 0:
            try:
                stack.enter_context(folder_lock(folder, "mechscope harvest (distributed)"))
                manifest = _start(model, sites, corpus, n_tokens, folder, kw)
            except Exception as exc:  # noqa: BLE001 - re-raised on every rank just below
                error = exc
        broadcast_error(error)
        box = [manifest]
        dist.broadcast_object_list(box, src=0)
        manifest = box[0]
        if manifest is not None and not manifest.complete:
            _run(model, corpus, manifest, folder, progress)
        dist.barrier()
    return ActivationStore.open(folder)


def _start(
    model: Any, sites: Any, corpus: Corpus, n_tokens: int, folder: Path, kw: dict[str, Any]
) -> Manifest:
    """Rank 0: the one-process harvest's checks and starting manifest (complete if done)."""
    cfg = {**_DEFAULTS, **kw}
    sites = [sites] if isinstance(sites, str) else list(sites)
    skip = 0 if cfg["include_first"] else 1
    _h._check_args(model, sites, cfg["dtype"], cfg["seq_len"], skip, cfg["prepend_bos"],
                       n_tokens, cfg["batch_size"], cfg["shard_tokens"])  # fmt: skip
    dims = _h._site_dims(model, sites)
    per_window = cfg["seq_len"] - skip
    shard_windows = max(1, cfg["shard_tokens"] // per_window)
    config = _h._config(
        model, sites, corpus, split=cfg["split"], seed=cfg["seed"], seq_len=cfg["seq_len"],
        prepend_bos=cfg["prepend_bos"], include_first=cfg["include_first"],
        batch_size=cfg["batch_size"], shard_windows=shard_windows, dtype=cfg["dtype"],
        n_tokens=n_tokens,
    )  # fmt: skip
    old, intact = _h._prepare_folder(folder, config, cfg["overwrite"])
    if old is not None and old.complete and old.config == config and len(intact) == len(old.shards):
        return old
    expected = dict(_h._shard_rows(n_tokens, shard_windows * per_window))
    provenance = getattr(model, "provenance", {}) or {}
    manifest = Manifest(
        config, dims, tuple(s for s in intact if expected.get(s.index) == s.n_tokens),
        extra={"model_path": str(provenance.get("path", "")), "torch": torch.__version__},
    )  # fmt: skip
    save_manifest(folder, manifest)
    _h._drop_unlisted(folder, manifest.shards)
    return manifest


_DEFAULTS: dict[str, Any] = {  # the one-process harvest's keyword defaults
    p.name: p.default
    for p in inspect.signature(_h.harvest).parameters.values()
    if p.kind is p.KEYWORD_ONLY and p.name != "progress"
}


def _run(model: Any, corpus: Corpus, manifest: Manifest, folder: Path, progress: bool) -> None:
    """Every rank: walk the shards in rounds of ``world``; rank 0 records each round."""
    cfg, me, world = manifest.config, rank(), world_size()
    per_window = cfg["seq_len"] - (0 if cfg["include_first"] else 1)
    done = {s.index for s in manifest.shards}
    stream = windows(corpus, model.tokenizer, seq_len=cfg["seq_len"], seed=cfg["seed"],
                     split=cfg["split"], prepend_bos=cfg["prepend_bos"])  # fmt: skip
    shards = list(_h._shard_rows(cfg["n_tokens"], cfg["shard_windows"] * per_window))
    bar = tqdm(total=cfg["n_tokens"], initial=manifest.n_tokens, unit="tok", unit_scale=True,
               desc=f"harvest rank {me}/{world}", dynamic_ncols=True,
               disable=not (progress and me == 0 and bars_enabled()))  # fmt: skip
    exhausted = False
    with bar:
        for start in range(0, len(shards), world):
            mine = None
            for index, rows in shards[start : start + world]:
                chunk = (
                    []
                    if exhausted
                    else list(itertools.islice(stream, math.ceil(rows / per_window)))
                )
                if len(chunk) * per_window < rows:
                    exhausted, rows = True, len(chunk) * per_window
                if index % world == me and index not in done and rows > 0:
                    mine = _h._harvest_shard(model, chunk, manifest, folder, index, rows, bar)
            infos: list[Any] = [None] * world
            dist.all_gather_object(infos, mine)
            if me == 0:
                for info in sorted(filter(None, infos), key=lambda s: s.index):
                    manifest = manifest.with_shard(info)
                save_manifest(folder, manifest)
            if exhausted:
                break
    if me == 0:
        save_manifest(folder, manifest.finished(exhausted=exhausted))
