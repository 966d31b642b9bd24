"""Who and what was audited: the model's source, file and parameter hashes, its architecture and
the package versions (section 1), and the data hashes of the reproducibility manifest (section 10).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
from pathlib import Path
from typing import Any

import torch

from mechscope import __version__
from mechscope.files import sha256_file
from mechscope.models.hooked import HookedModel

__all__ = ["data_hashes", "parameters_sha256", "versions", "weight_files"]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
PACKAGES = ("torch", "transformers", "numpy", "safetensors", "tokenizers", "jinja2", "matplotlib")


def versions() -> dict[str, str]:
    """mechscope, Python and the packages the results depend on."""
    out = {"mechscope": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _hub_folder(repo: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the local cache: no files to hash
        return None


def weight_files(model: HookedModel) -> list[dict[str, Any]]:
    """``[{"file", "bytes", "sha256"}]`` of the files the weights were read from (none for a
    model built in memory). A GGUF's hash is the one computed when it was loaded."""
    prov = model.provenance if isinstance(model.provenance, dict) else {}
    source, path = prov.get("source"), prov.get("path")
    if not path:
        return []
    if source in ("alias", "gguf"):
        p = Path(path)
        sha = prov.get("sha256") or sha256_file(p)
        return [{"file": p.name, "bytes": p.stat().st_size, "sha256": sha}]
    folder = _hub_folder(path) if source == "hub" else Path(path)
    if folder is None or not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    return [{"file": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files]


def parameters_sha256(model: HookedModel) -> str:
    """sha256 over every parameter's name, shape, dtype and bytes: the weights as loaded."""
    digest = hashlib.sha256()
    for name, param in model.hf.named_parameters():
        t = param.detach().cpu().contiguous()
        digest.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _text_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _path_sha(path: str) -> str:
    """sha256 of a file, or of a folder's files (names and hashes, sorted)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        return _text_sha("".join(f"{f.relative_to(p)}:{sha256_file(f)}\n" for f in files))
    return "unavailable"


def data_hashes(config: Any, task_texts: dict[str, str], corpus: Any) -> list[dict[str, str]]:
    """``[{"data", "what", "sha256"}]`` of every input the audit read."""
    rows = [
        {"data": f"task {name}", "what": "the prompts and answers used", "sha256": _text_sha(t)}
        for name, t in task_texts.items()
    ]
    name = getattr(corpus, "name", None) or "built-in corpus"
    fingerprint = getattr(corpus, "fingerprint", None)
    rows.append({"data": f"corpus {name}", "what": "fingerprint", "sha256": str(fingerprint)})
    for label, path in (("feature database", config.features), ("detector", config.detector),
                        ("SAE", config.sae)):  # fmt: skip
        if path and "://" not in path:
            rows.append({"data": f"{label} {Path(path).name}", "what": "file(s)",
                         "sha256": _path_sha(path)})  # fmt: skip
    for set_name, path in config.screen:
        rows.append({"data": f"screening set {set_name}", "what": Path(path).name,
                     "sha256": _path_sha(path)})  # fmt: skip
    return rows
