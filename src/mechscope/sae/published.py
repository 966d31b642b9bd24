"""Published dictionaries, loaded from local folders in the layouts their authors publish.

:func:`load_sae` (``mechscope.sae.load_sae``) detects the layout or takes ``format=`` and returns
a mechscope :class:`SAE` at a mechscope site; docs/sae.md tabulates files, tensors and sites.

``saelens``         ``cfg.json`` + ``sae_weights.safetensors`` (:mod:`mechscope.sae.io`).
``gemma_scope``     ``params.npz`` / Gemma Scope 2's ``params.safetensors``: JumpReLU
                    ``(pre > threshold) * relu(pre)``; site from the release folder and ``layer_L``.
``sparsify``        a hookpoint folder (``layers.6``, ``layers.6.mlp``): ``cfg.json`` +
                    ``sae.safetensors``, TopK of ``relu(pre)``.
``circuit_tracer``  ``config.yaml`` + ``layer_L.safetensors`` per layer (ReLU, JumpReLU or TopK).

Skip connections (``x_hat += x @ W_skip``) are a buffer on the SAE. Gemma Scope's transcoders read
the pre-MLP RMSNorm output *before* its gain (``blocks.L.ln2.hook_normalized``); given ``model=``,
the gain is divided into ``W_enc`` so that they read ``blocks.L.mlp.hook_in`` exactly.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from mechscope.errors import MechscopeError
from mechscope.sae import io
from mechscope.sae.base import ARCHITECTURES, SAE, SAEConfig, SAEOutput

__all__ = ["FORMATS", "detect_format", "load_sae"]

FORMATS = ("saelens", "gemma_scope", "sparsify", "circuit_tracer")
NORMALIZED = "ln2.hook_normalized"  # TransformerLens name of the pre-MLP norm before its gain


def load_sae(
    path: str | Path,
    *,
    model: Any = None,
    format: str | None = None,
    layer: int | None = None,
    site: str | None = None,
    out_site: str | None = None,
) -> SAE:
    """A published SAE or transcoder in eval mode, at its mechscope site.

    ``path`` is a folder or a weights file; ``format`` one of :data:`FORMATS` (default: detected).
    ``model`` (a HookedModel) checks the site and widths and folds Gemma Scope's norm gain;
    ``layer`` picks one transcoder of a circuit-tracer set; ``site`` / ``out_site`` override
    the site read / written when the path does not say it.
    """
    p = Path(path)
    if p.is_file() and p.name in ("cfg.json", "sae.safetensors", "sae_weights.safetensors"):
        p = p.parent  # SAELens and sparsify are folders
    if not p.exists():
        raise MechscopeError(
            f"no SAE at {p} (no cfg.json, params.npz or config.yaml): pass a folder that exists"
        )
    fmt = format or detect_format(p)
    if fmt not in FORMATS:
        raise MechscopeError(f"unknown SAE format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "saelens":
        sae = io.load_sae(p)
    else:
        sae = {"gemma_scope": _gemma_scope, "sparsify": _sparsify, "circuit_tracer": _tracer}[fmt](
            p, layer
        )
    # a SAELens file without a hook name still loads without a model (e.g. to score it)
    sae = _resite(sae, site, out_site, required=model is not None or fmt != "saelens")
    if model is not None:
        sae = _fold_norm_gain(sae, model)
        _check_against(sae, model, p)
    return sae.eval()


def detect_format(path: Path) -> str:
    """The layout of ``path`` from its file names (one of :data:`FORMATS`)."""
    folder = path if path.is_dir() else path.parent
    names = {path.name} if path.is_file() else {q.name for q in path.iterdir()}
    if "cfg.json" in names:  # SAELens reports its own missing files
        return "sparsify" if "sae.safetensors" in names else "saelens"
    if names & {"params.npz", "params.safetensors"}:
        return "gemma_scope"
    if "config.yaml" in names or (folder / "config.yaml").is_file() or _layer_files(folder):
        return "circuit_tracer"
    raise MechscopeError(
        f"{path} is in no known SAE layout (SAELens cfg.json + sae_weights.safetensors, Gemma "
        "Scope params.npz, sparsify cfg.json + sae.safetensors, circuit-tracer config.yaml); "
        "pass format="
    )


# --- skip connections --------------------------------------------------------------------------


class _Skip:
    """Mixin: ``x_hat += x @ W_skip`` (a buffer ``[d_in d_out]``), in model units."""

    W_skip: Tensor

    def forward(self, x: Tensor) -> SAEOutput:  # type: ignore[override]
        out = super().forward(x)  # type: ignore[misc]
        return out._replace(x_hat=out.x_hat + x.to(self.W_skip.dtype) @ self.W_skip)


_SKIP_CLASSES: dict[str, type] = {}


def _build(cfg: SAEConfig, skip: Tensor | None) -> SAE:
    """An SAE of ``cfg.arch``, with a skip connection when ``skip`` is given."""
    if skip is None:
        return SAE(cfg, seed=None)
    if tuple(skip.shape) != (cfg.d_in, cfg.width_out):
        raise MechscopeError(
            f"skip connection of shape {list(skip.shape)}, expected {[cfg.d_in, cfg.width_out]}: "
            "the file is damaged or not in this layout"
        )
    base = ARCHITECTURES[cfg.arch]
    cls = _SKIP_CLASSES.setdefault(cfg.arch, type(f"Skip{base.__name__}", (_Skip, base), {}))
    sae = cls(cfg, seed=None)
    sae.register_buffer("W_skip", skip.to(sae.W_enc.dtype).contiguous())
    return sae


@torch.no_grad()
def _fill(sae: SAE, t: dict[str, Tensor], origin: Path) -> SAE:
    """Copy ``W_enc [d_in d_sae]``, ``b_enc``, ``W_dec [d_sae d_out]``, ``b_dec`` (+ threshold)."""
    c = sae.cfg
    want = {
        "W_enc": (c.d_in, c.d_sae),
        "b_enc": (c.d_sae,),
        "W_dec": (c.d_sae, c.width_out),
        "b_dec": (c.width_out,),
    }
    if c.arch == "jumprelu":
        want["threshold"] = (c.d_sae,)
    for name, shape in want.items():
        got = tuple(t[name].shape)
        if got != shape:
            raise MechscopeError(
                f"{origin}: {name} has shape {list(got)}, expected {list(shape)}: the file is "
                "damaged or not in this layout"
            )
        if name != "threshold":
            getattr(sae, name).copy_(t[name].to(sae.W_enc.dtype))
    if c.arch == "jumprelu":
        thr = t["threshold"].to(sae.W_enc.dtype)
        if (thr < 0).any() or not torch.isfinite(thr).all():
            raise MechscopeError(f"{origin}: JumpReLU thresholds must be finite and >= 0")
        # a 0 threshold (a ReLU latent) becomes the smallest positive float: log must be finite
        sae.log_threshold.copy_(thr.clamp(min=torch.finfo(thr.dtype).tiny).log())
    return sae


def _read_tensors(path: Path) -> dict[str, Tensor]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: torch.from_numpy(np.array(data[k])) for k in data.files}
        return load_file(path)
    except (OSError, ValueError, SafetensorError) as exc:
        raise MechscopeError(f"cannot read {path} ({exc}): the file is damaged") from exc


def _need(t: dict[str, Tensor], names: tuple[str, ...], origin: Path) -> None:
    missing = [n for n in names if n not in t]
    if missing:
        raise MechscopeError(f"{origin} has no tensor {missing[0]!r}: not in the expected layout")


# --- Gemma Scope -------------------------------------------------------------------------------

_GS_SITES = {  # release suffix or Gemma Scope 2 folder -> (site read, site written)
    "res": ("hook_resid_post", None),
    "resid_post": ("hook_resid_post", None),
    "mlp": ("hook_mlp_out", None),
    "mlp_out": ("hook_mlp_out", None),
    "att": ("attn.hook_z", None),
    "transcoders": (NORMALIZED, "hook_mlp_out"),
}


def _gemma_scope(path: Path, layer: int | None) -> SAE:
    names = [path / n for n in ("params.npz", "params.safetensors") if (path / n).is_file()]
    file = path if path.is_file() or not names else names[0]
    raw = _read_tensors(file)
    t = {k.replace("w_", "W_", 1) if k.startswith("w_") else k: v for k, v in raw.items()}
    _need(t, ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"), file)
    skip = t.get("affine_skip_connection")
    read, write = _gemma_scope_sites(file, layer)
    d_in, d_sae = t["W_enc"].shape
    cfg = SAEConfig(
        arch="jumprelu", d_in=int(d_in), d_sae=int(d_sae), hook_name=read, out_hook_name=write,
        d_out=int(t["W_dec"].shape[1]) if write else None, apply_b_dec_to_input=False,
    )  # fmt: skip
    return _fill(_build(cfg, skip), t, file)


def _gemma_scope_sites(file: Path, layer: int | None) -> tuple[str, str | None]:
    parts = [q.lower() for q in file.parts]
    if "embedding" in parts:
        raise MechscopeError(
            f"{file} is a Gemma Scope embedding SAE, whose input scale differs between Gemma "
            "versions: not supported"
        )
    kind = None
    for q in parts:
        m = re.search(r"gemma-scope-.*-(res|mlp|att|transcoders)(?:-canonical)?$", q)
        kind = m.group(1) if m else kind
        kind = q if q in ("resid_post", "mlp_out") else kind
    m = next((re.match(r"layer_(\d+)", q) for q in reversed(parts) if q.startswith("layer_")), None)
    found = int(m.group(1)) if m else layer
    if kind is None or found is None:
        return "", None  # site= must say it (checked in _resite)
    read, write = _GS_SITES[kind]
    return f"blocks.{found}.{read}", f"blocks.{found}.{write}" if write else None


# --- sparsify ----------------------------------------------------------------------------------


def _sparsify(path: Path, layer: int | None) -> SAE:
    folder = path if path.is_dir() else path.parent
    try:
        cfg_raw = json.loads((folder / "cfg.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MechscopeError(f"cannot read {folder / 'cfg.json'} ({exc})") from exc
    if cfg_raw.get("activation", "topk") != "topk":
        raise MechscopeError(
            f"{folder}: sparsify activation {cfg_raw['activation']!r} is not supported (topk only)"
        )
    file = folder / "sae.safetensors"
    t = _read_tensors(file)
    _need(t, ("encoder.weight", "encoder.bias", "W_dec", "b_dec"), file)
    transcode = bool(cfg_raw.get("transcode", False))
    read, write = _sparsify_sites(folder.name, transcode)
    d_sae, d_in = t["encoder.weight"].shape
    cfg = SAEConfig(
        arch="topk", d_in=int(d_in), d_sae=int(d_sae), hook_name=read, out_hook_name=write,
        k=int(cfg_raw["k"]), apply_b_dec_to_input=not transcode,
    )  # fmt: skip
    tensors = {"W_enc": t["encoder.weight"].T, "b_enc": t["encoder.bias"]}
    tensors |= {"W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    skip = t["W_skip"].T if "W_skip" in t else None
    return _fill(_build(cfg, skip), tensors, file)


def _sparsify_sites(hookpoint: str, transcode: bool) -> tuple[str, str | None]:
    """mechscope sites of a sparsify hookpoint (a module path under the HF base model)."""
    if hookpoint in ("embed_tokens", "wte", "embed_in") and not transcode:
        return "hook_embed", None
    m = re.fullmatch(r"(?:[\w.]*\.)?(?:layers|h)\.(\d+)(?:\.(\w+))?", hookpoint)
    if not m or m.group(2) not in (None, "mlp", "attn", "self_attn", "attention"):
        return "", None  # site= must say it
    block, part = f"blocks.{m.group(1)}.", m.group(2)
    if part is None:
        return (
            (block + "hook_resid_pre", block + "hook_resid_post")
            if transcode
            else (block + "hook_resid_post", None)
        )
    if part == "mlp":
        return (
            (block + "mlp.hook_in", block + "hook_mlp_out")
            if transcode
            else (block + "hook_mlp_out", None)
        )
    return ("", None) if transcode else (block + "hook_attn_out", None)


# --- circuit-tracer ----------------------------------------------------------------------------


def _layer_files(folder: Path) -> dict[int, Path]:
    out = {}
    for q in folder.glob("layer_*.safetensors"):
        m = re.fullmatch(r"layer_(\d+)\.safetensors", q.name)
        if m:
            out[int(m.group(1))] = q
    return out


def _tracer(path: Path, layer: int | None) -> SAE:
    import yaml  # a dependency of transformers

    folder = path if path.is_dir() else path.parent
    conf: dict[str, Any] = {}
    if (folder / "config.yaml").is_file():
        try:
            conf = yaml.safe_load((folder / "config.yaml").read_text()) or {}
        except yaml.YAMLError as exc:
            raise MechscopeError(f"{folder / 'config.yaml'} is not valid YAML ({exc})") from exc
        if not isinstance(conf, dict):
            raise MechscopeError(f"{folder / 'config.yaml'} is not a circuit-tracer config")
    if conf.get("model_kind", "transcoder_set") != "transcoder_set":
        raise MechscopeError(
            f"{folder}: circuit-tracer model_kind {conf['model_kind']!r} is not supported "
            "(per-layer transcoder sets only; a cross-layer transcoder writes to every later layer)"
        )
    files = _layer_files(folder)
    for i, entry in enumerate(conf.get("transcoders") or []):
        files.setdefault(i, _entry_path(folder, str(entry)))
    if path.is_file():
        layer = next((i for i, q in files.items() if q.name == path.name), layer)
    if layer is None or layer not in files:
        have = sorted(files)
        raise MechscopeError(f"{folder}: pick a transcoder with layer= (this set has {have})")
    file = files[layer]
    # Gemma Scope transcoders may be listed in a circuit-tracer config
    sae = _gemma_scope(file, layer) if file.suffix == ".npz" else _tracer_layer(file, conf)
    read = f"blocks.{layer}.{_tl_hook(conf.get('feature_input_hook', 'mlp.hook_in'))}"
    write = f"blocks.{layer}.{_tl_hook(conf.get('feature_output_hook', 'mlp.hook_out'))}"
    return _resite(sae, read, write)


def _entry_path(folder: Path, entry: str) -> Path:
    """A ``transcoders`` entry on disk: ``hf://owner/repo/a/b?revision=r`` is ``folder/a/b``."""
    if entry.startswith("hf://"):
        return folder.joinpath(*entry[5:].split("?")[0].split("/")[2:])
    return Path(entry) if Path(entry).is_absolute() else folder / entry


def _tl_hook(name: str) -> str:
    return {"mlp.hook_out": "hook_mlp_out"}.get(name, name)


def _tracer_layer(file: Path, conf: dict[str, Any]) -> SAE:
    t = _read_tensors(file)
    _need(t, ("W_enc", "W_dec", "b_enc", "b_dec"), file)
    thr = t.get("activation_function.threshold")
    act = conf.get("activation") or ("jumprelu" if thr is not None else "relu")
    k = conf.get("k", int(t["k"]) if "k" in t else None)
    arch = {"relu": "relu", "jumprelu": "jumprelu", "jump_relu": "jumprelu", "topk": "topk"}.get(
        act
    )
    if arch is None:
        raise MechscopeError(f"{file}: circuit-tracer activation {act!r} is not supported")
    d_sae, d_model = t["W_enc"].shape
    cfg = SAEConfig(
        arch=arch, d_in=int(d_model), d_sae=int(d_sae), hook_name="in", out_hook_name="out",
        d_out=int(t["W_dec"].shape[1]), k=k, apply_b_dec_to_input=False,
    )  # fmt: skip
    tensors = {"W_enc": t["W_enc"].T, "b_enc": t["b_enc"], "W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    if thr is not None:
        tensors["threshold"] = thr.reshape(-1)
    skip = t["W_skip"].T if "W_skip" in t else None
    return _fill(_build(cfg, skip), tensors, file)


# --- sites -------------------------------------------------------------------------------------


def _resite(sae: SAE, site: str | None, out_site: str | None, required: bool = True) -> SAE:
    """The same weights at other sites (a new config; the tensors are shared).

    With ``required=False`` a dictionary whose site is unknown loads as it is."""
    c = sae.cfg
    read = site or c.hook_name
    write = out_site or c.out_hook_name
    if not read and not required:
        return sae
    if not read:
        raise MechscopeError(
            "the path does not say which site this dictionary reads: pass site= (for example "
            "blocks.6.hook_resid_post) and, for a transcoder, out_site="
        )
    if (read, write) == (c.hook_name, c.out_hook_name):
        return sae
    cfg = SAEConfig(**{**c.__dict__, "hook_name": read, "out_hook_name": write})
    sae.cfg = cfg
    return sae


def _site_width(model: Any, name: str) -> int:
    return int(np.prod([d for d in model.sites[name].shape(model.dims)[2:]]))


def _check_against(sae: SAE, model: Any, origin: Path) -> None:
    c = sae.cfg
    for name, width, what in (
        (c.hook_name, c.d_in, "reads"),
        (c.out_hook_name, c.width_out, "writes"),
    ):
        if name is None:
            continue
        if name not in model.sites:
            raise MechscopeError(
                f"the dictionary in {origin} {what} {name}, which this model has not "
                f"({model.dims.n_layers} layers): it belongs to another model, or pass site="
            )
        if _site_width(model, name) != width:
            raise MechscopeError(
                f"the dictionary in {origin} {what} width {width} but {name} is "
                f"{_site_width(model, name)} wide: it belongs to another model or site"
            )


@torch.no_grad()
def _fold_norm_gain(sae: SAE, model: Any) -> SAE:
    """Read ``blocks.L.mlp.hook_in`` instead of the pre-MLP norm's output before its gain."""
    m = re.fullmatch(r"blocks\.(\d+)\." + re.escape(NORMALIZED), sae.cfg.hook_name)
    if m is None:
        return sae
    layer = int(m.group(1))
    if not 0 <= layer < model.dims.n_layers or model.dims.norm != "rms":
        raise MechscopeError(
            f"{sae.cfg.hook_name} needs an RMSNorm model with layer {layer}: wrong model"
        )
    gain = _rms_gain(model.block(layer).get_submodule(model.family.ln2), model.dims.d_model)
    if gain.shape[0] != sae.cfg.d_in or bool((gain.abs() < 1e-6).any()):
        raise MechscopeError(f"cannot fold the layer-{layer} norm gain into the transcoder")
    g = gain.to(sae.W_enc.dtype)[:, None]
    sae.W_enc.div_(g)
    if isinstance(sae, _Skip):
        sae.W_skip.div_(g)
    return _resite(sae, f"blocks.{layer}.mlp.hook_in", None)


def _rms_gain(norm: Any, d: int) -> Tensor:
    """The per-channel gain ``g`` of an RMSNorm: ``norm(x) = x / rms(x) * g``, checked."""
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
    ref = copy.deepcopy(norm).to("cpu", torch.float64)  # the gain at full precision
    x = torch.randn(16, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    y = ref(x).double()
    g = (y * u).sum(0) / u.pow(2).sum(0)
    if not torch.allclose(u * g, y, rtol=1e-4, atol=1e-6):
        raise MechscopeError("the pre-MLP norm is not an RMSNorm x / rms(x) * g: cannot fold it")
    return g
