"""Harvest activations at one or more sites over a corpus into a sharded, crash-safe store.

Steps:

1. Cut the corpus into token windows (:func:`mechscope.corpus.windows`, deterministic for a seed)
   and group them into shards of ``shard_windows`` windows; shard ``i`` always holds the same
   windows, so a shard's content depends only on its index and the config.
2. For each shard not already listed in the manifest, run the model on batches of its windows with
   hooks that copy each site's activation into the shard buffer (the only large thing in RAM), and
   stop the forward pass once every requested site has been seen (``hooks(stop_after=)``; a
   harvest at layer 6 of 30 runs about a fifth of the model).
3. Write the shard to a temporary file, fsync it and ``os.replace`` it into place, then rewrite the
   manifest atomically. A harvest killed at any moment leaves a manifest that lists only complete
   shards; running it again skips their windows, overwrites anything else and finishes.
4. When every shard is written, record per-site norm scales (``1 / sqrt(mean ||x||^2)``) computed
   from the per-shard sums of squared norms, and mark the store complete.

The first position of each window is not stored unless ``include_first=True``: it is BOS with
``prepend_bos``, and otherwise the attention-sink position; either way its activations are outliers
that would dominate the norm statistics and the SAE's training signal (SAELens drops BOS too). The MLP input for a transcoder is the residual stream
the MLP block reads, ``blocks.L.hook_resid_mid``, paired with ``blocks.L.hook_mlp_out``.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm

from mechscope.activations.manifest import (
    MANIFEST,
    Manifest,
    ShardInfo,
    read_manifest,
    save_manifest,
)
from mechscope.activations.store import ActivationStore, shard_name
from mechscope.corpus import Corpus, windows
from mechscope.errors import MechscopeError
from mechscope.files import LOCK_FILE, atomic_path, folder_lock, sha256_file
from mechscope.models.fingerprint import model_fingerprint
from mechscope.progress import bars_enabled

__all__ = ["DTYPES", "harvest", "model_fingerprint"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _site_dims(model: Any, sites: Sequence[str]) -> dict[str, int]:
    dims = {}
    for name in sites:
        if name not in model.sites:
            from mechscope.sites.table import unknown_site_error

            raise unknown_site_error(name, model.sites)
        site = model.sites[name]
        shape = site.shape(model.dims)
        if tuple(site.axes[:2]) != ("batch", "pos") or not all(
            isinstance(s, int) for s in shape[2:]
        ):
            raise MechscopeError(
                f"site {name} has shape {shape}, not one vector per token; "
                "harvest a [batch pos ...] site such as blocks.L.hook_resid_post"
            )
        dims[name] = math.prod(shape[2:])  # type: ignore[arg-type]
    return dims


def _config(model: Any, sites: list[str], corpus: Corpus, **kw: Any) -> dict[str, Any]:
    provenance = getattr(model, "provenance", {}) or {}
    name = provenance.get("name") or getattr(model.hf.config, "name_or_path", "") or "model"
    return {
        "model": str(name),
        "model_fingerprint": model_fingerprint(model),
        "sites": sites,
        "corpus": corpus.name,
        "corpus_fingerprint": corpus.fingerprint,
        **kw,
    }


def _prepare_folder(
    folder: Path, config: dict[str, Any], overwrite: bool
) -> tuple[Manifest | None, list[ShardInfo]]:
    """Check ``folder`` against ``config``; clean crash leftovers; return the old manifest and its
    intact shards. Only ``n_tokens`` may differ: a store can be extended or cut short."""
    folder.mkdir(parents=True, exist_ok=True)
    ours = [p for p in folder.iterdir() if p.name.startswith(("shard-", ".shard-", ".manifest"))]
    if overwrite:
        for p in [*ours, folder / MANIFEST]:
            p.unlink(missing_ok=True)
    if not (folder / MANIFEST).exists():
        others = [p.name for p in folder.iterdir() if p not in ours and p.name != LOCK_FILE]
        if others:
            raise MechscopeError(
                f"{folder} is not empty and holds no activation store ({others[0]}, ...); "
                "pick an empty or new folder"
            )
        return None, []
    old = read_manifest(folder)
    keys = {*old.config, *config} - {"n_tokens"}
    diff = sorted(k for k in keys if old.config.get(k) != config.get(k))
    if diff:
        raise MechscopeError(
            f"{folder} holds a harvest with other settings ({', '.join(diff)} differ); "
            "pick another output folder or pass --overwrite"
        )
    return old, [s for s in old.shards if _size(folder / s.file) == s.bytes]


def _drop_unlisted(folder: Path, shards: tuple[ShardInfo, ...]) -> None:
    """Remove temporary files and shard files the manifest does not list (crash leftovers)."""
    listed = {s.file for s in shards}
    for p in folder.iterdir():
        if p.name.startswith((".shard-", ".manifest")) or (
            p.name.startswith("shard-") and p.name not in listed
        ):
            p.unlink(missing_ok=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _capture_into(
    model: Any, tokens: Tensor, buffers: dict[str, Tensor], offset: int, n_rows: int, skip: int
) -> dict[str, float]:
    """Run ``tokens`` and copy rows ``[offset, offset + n_rows)`` of each buffer from its site."""
    seen: dict[str, float] = {}

    def grab(t: Tensor, hook: Any) -> None:
        rows = t[:, skip:].reshape(-1, buffers[hook.name].shape[1])[:n_rows]
        out = buffers[hook.name][offset : offset + n_rows]
        out.copy_(rows)
        seen[hook.name] = float(out.double().pow(2).sum())

    hooks = model.hooks([(name, grab) for name in buffers], stop_after=list(buffers))
    with torch.inference_mode(), hooks:
        model(tokens)
    if len(seen) != len(buffers):
        missing = sorted(set(buffers) - set(seen))
        raise MechscopeError(f"sites {missing} were not reached by the forward pass")
    return seen


def _write_shard(folder: Path, index: int, buffers: dict[str, Tensor], n_rows: int) -> ShardInfo:
    name = shard_name(index)
    with atomic_path(folder / name) as tmp:
        save_file({k: v[:n_rows].contiguous() for k, v in buffers.items()}, str(tmp))
        digest = sha256_file(tmp)
        size = tmp.stat().st_size
    return ShardInfo(index, name, n_rows, size, digest, {})


def _shard_rows(n_tokens: int, shard_rows: int) -> Iterator[tuple[int, int]]:
    for i in range(math.ceil(n_tokens / shard_rows)):
        yield i, min(shard_rows, n_tokens - i * shard_rows)


def _check_args(
    model: Any,
    sites: list[str],
    dtype: str,
    seq_len: int,
    skip: int,
    prepend_bos: bool,
    *counts: int,
) -> None:
    if not sites or len(set(sites)) != len(sites):
        raise MechscopeError(f"sites must be one or more distinct site names, got {sites}")
    if dtype not in DTYPES:
        raise MechscopeError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    for label, value in zip(("n_tokens", "batch_size", "shard_tokens"), counts, strict=True):
        if not isinstance(value, int) or value < 1:
            raise MechscopeError(f"{label} must be a positive integer, got {value!r}")
    if model.tokenizer is None:
        raise MechscopeError("this model has no tokenizer; harvest needs one to cut the corpus")
    if prepend_bos and model.tokenizer.bos_token_id is None:
        raise MechscopeError("this tokenizer has no BOS token; use prepend_bos=False")
    if seq_len < 1 + max(skip, int(prepend_bos)):
        least = 1 + max(skip, int(prepend_bos))
        raise MechscopeError(f"seq_len={seq_len} is too short; use at least {least}")
    if seq_len > model.dims.n_ctx:
        raise MechscopeError(f"seq_len={seq_len} exceeds the model's context of {model.dims.n_ctx}")


def harvest(
    model: Any,
    sites: str | Sequence[str],
    corpus: Corpus,
    n_tokens: int,
    out_dir: str | os.PathLike[str],
    *,
    seq_len: int = 128,
    batch_size: int = 8,
    shard_tokens: int = 65536,
    dtype: str = "float32",
    seed: int = 0,
    split: str = "train",
    prepend_bos: bool = False,
    include_first: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ActivationStore:
    """Harvest ``n_tokens`` rows of each site into ``out_dir``; resume if it holds a partial run.

    ``sites`` is one site name (an SAE's input) or several (e.g. ``["blocks.6.hook_resid_mid",
    "blocks.6.hook_mlp_out"]`` for a transcoder); every site gets the same token rows.
    ``include_first`` stores each window's first position too (BOS with ``prepend_bos``).
    """
    sites = [sites] if isinstance(sites, str) else list(sites)
    skip = 0 if include_first else 1
    _check_args(model, sites, dtype, seq_len, skip, prepend_bos, n_tokens, batch_size, shard_tokens)
    dims = _site_dims(model, sites)
    per_window = seq_len - skip
    shard_windows = max(1, shard_tokens // per_window)
    config = _config(
        model, sites, corpus, split=split, seed=seed, seq_len=seq_len, prepend_bos=prepend_bos,
        include_first=include_first, batch_size=batch_size, shard_windows=shard_windows,
        dtype=dtype, n_tokens=n_tokens,
    )  # fmt: skip
    folder = Path(out_dir)
    with folder_lock(folder, "mechscope harvest"):  # one harvest per folder at a time
        old, intact = _prepare_folder(folder, config, overwrite)
        if (
            old is not None
            and old.complete
            and old.config == config
            and len(intact) == len(old.shards)
        ):
            return ActivationStore.open(folder)
        expected = dict(_shard_rows(n_tokens, shard_windows * per_window))
        provenance = getattr(model, "provenance", {}) or {}
        manifest = Manifest(
            config,
            dims,
            tuple(s for s in intact if expected.get(s.index) == s.n_tokens),
            extra={"model_path": str(provenance.get("path", "")), "torch": torch.__version__},
        )
        save_manifest(folder, manifest)
        _drop_unlisted(folder, manifest.shards)
        _run(model, corpus, manifest, folder, per_window, progress)
        return ActivationStore.open(folder)


def _harvest_shard(
    model: Any,
    chunk: list[Tensor],
    manifest: Manifest,
    folder: Path,
    index: int,
    rows: int,
    bar: tqdm,
) -> ShardInfo:
    """Run the windows of one shard, fill its buffers and write it (atomically)."""
    cfg = manifest.config
    skip, size = 0 if cfg["include_first"] else 1, cfg["batch_size"]
    buffers = {
        s: torch.empty(rows, d, dtype=DTYPES[cfg["dtype"]]) for s, d in manifest.dims.items()
    }
    sums = dict.fromkeys(buffers, 0.0)
    offset = 0
    for start in range(0, len(chunk), size):
        tokens = torch.stack(chunk[start : start + size])
        n = min(tokens.shape[0] * (tokens.shape[1] - skip), rows - offset)
        for site, value in _capture_into(model, tokens, buffers, offset, n, skip).items():
            sums[site] += value
        offset += n
        bar.update(n)
    info = _write_shard(folder, index, buffers, rows)
    return ShardInfo(info.index, info.file, info.n_tokens, info.bytes, info.sha256, sums)


def _run(
    model: Any, corpus: Corpus, manifest: Manifest, folder: Path, per_window: int, progress: bool
) -> Manifest:
    cfg = manifest.config
    done = {s.index for s in manifest.shards}
    stream = windows(
        corpus, model.tokenizer, seq_len=cfg["seq_len"], seed=cfg["seed"], split=cfg["split"],
        prepend_bos=cfg["prepend_bos"],
    )  # fmt: skip
    bar = tqdm(
        total=cfg["n_tokens"], initial=manifest.n_tokens, unit="tok", unit_scale=True,
        desc="harvest", disable=not (progress and bars_enabled()), dynamic_ncols=True,
    )  # fmt: skip
    exhausted = False
    with bar:
        for index, rows in _shard_rows(cfg["n_tokens"], cfg["shard_windows"] * per_window):
            chunk = list(itertools.islice(stream, math.ceil(rows / per_window)))
            if len(chunk) * per_window < rows:
                exhausted, rows = True, len(chunk) * per_window
            if index not in done and rows > 0:
                manifest = manifest.with_shard(
                    _harvest_shard(model, chunk, manifest, folder, index, rows, bar)
                )
                save_manifest(folder, manifest)
            if exhausted:
                break
    manifest = manifest.finished(exhausted=exhausted)
    save_manifest(folder, manifest)
    return manifest
