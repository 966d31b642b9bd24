"""SAEs on disk in SAELens's layout: ``cfg.json`` + ``sae_weights.safetensors``.

Written as SAELens 6.x writes an inference SAE (``SAE.save_inference_model``): tensors ``W_enc
[d_in d_sae]``, ``b_enc``, ``W_dec [d_sae d_in]``, ``b_dec`` (and ``threshold [d_sae]`` for
JumpReLU); cfg keys ``d_in, d_sae, dtype, device, apply_b_dec_to_input, normalize_activations,
reshape_activations, architecture`` (+ ``k`` and ``rescale_acts_by_decoder_norm`` for TopK,
``d_out`` for transcoders) and ``metadata`` (``model_name, hook_name, hook_name_out,
dataset_path, sae_lens_version, ...``). Mapping of architectures:

=================  ===================================================================
mechscope          SAELens ``architecture``
=================  ===================================================================
relu               ``standard`` (``transcoder`` with ``out_hook_name``)
topk               ``topk`` (``topk_transcoder``: not in SAELens, mechscope only)
batchtopk          ``jumprelu`` with one threshold for all latents, as SAELens saves it
matryoshka         ``jumprelu`` likewise (SAELens saves its Matryoshka BatchTopK so)
jumprelu           ``jumprelu`` (``jumprelu_transcoder``)
=================  ===================================================================

``normalize_scale`` is folded into the weights on saving (``W_enc * s``, ``W_dec / s``, ``b_dec
/ s``; the function is unchanged), as SAELens does after training, and ``normalize_activations``
is ``"none"``. mechscope's own config (target L0 ``k``, coefficients, Matryoshka widths, the
architecture before mapping) rides along in ``metadata["mechscope"]``, with the sparsity
coefficient a ReLU/JumpReLU SAE ended training with (``sparsity_coefficient``). Loading also reads pre-6.0 flat configs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from mechscope.errors import MechscopeError
from mechscope.files import atomic_path, write_atomic
from mechscope.sae.base import DTYPES, SAE, SAEConfig

__all__ = ["CFG_FILE", "WEIGHTS_FILE", "load_sae", "save_sae", "saelens_config"]

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
LAYOUT_VERSION = "6.0.0"  # the SAELens config layout written here (metadata.sae_lens_version)

# SAELens architecture -> (mechscope arch, transcoder?)
FROM_SAELENS = {
    "standard": ("relu", False),
    "topk": ("topk", False),
    "jumprelu": ("jumprelu", False),
    "transcoder": ("relu", True),
    "jumprelu_transcoder": ("jumprelu", True),
    "topk_transcoder": ("topk", True),
}
TO_SAELENS = {
    ("relu", False): "standard",
    ("topk", False): "topk",
    ("batchtopk", False): "jumprelu",
    ("jumprelu", False): "jumprelu",
    ("matryoshka", False): "jumprelu",
    ("relu", True): "transcoder",
    ("topk", True): "topk_transcoder",
    ("batchtopk", True): "jumprelu_transcoder",
    ("jumprelu", True): "jumprelu_transcoder",
    ("matryoshka", True): "jumprelu_transcoder",
}
THRESHOLD_ARCHS = ("jumprelu", "batchtopk", "matryoshka")  # saved with a threshold tensor


def saelens_config(sae: SAE) -> dict[str, Any]:
    """The ``cfg.json`` dict SAELens 6.x would write for this SAE (scale folded: normalize none)."""
    c = sae.cfg
    arch = TO_SAELENS[(c.arch, c.is_transcoder)]
    out: dict[str, Any] = {
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": c.dtype,
        "device": "cpu",
        "apply_b_dec_to_input": c.centre_input,
        "normalize_activations": "none",
        "reshape_activations": "hook_z" if c.hook_name.endswith("hook_z") else "none",
    }
    if arch in ("topk", "topk_transcoder"):
        out.update(k=c.k, rescale_acts_by_decoder_norm=False)
    if c.is_transcoder:
        out["d_out"] = c.width_out
    mech = {k: v for k, v in dataclasses.asdict(c).items() if k not in ("normalize_scale",)}
    if sae.penalty is not None:
        mech["sparsity_coefficient"] = float(sae.coefficient)
    out["metadata"] = {
        "sae_lens_version": LAYOUT_VERSION,
        "sae_lens_training_version": None,
        "model_name": c.model_name,
        "hook_name": c.hook_name,
        "hook_head_index": None,
        "dataset_path": c.dataset,
        "model_from_pretrained_kwargs": {},
        **(
            {"hook_name_out": c.out_hook_name, "hook_head_index_out": None}
            if c.is_transcoder
            else {}
        ),
        "mechscope": {**mech, "folded_normalize_scale": c.normalize_scale},
    }
    out["architecture"] = arch
    return out


@torch.no_grad()
def saelens_tensors(sae: SAE) -> dict[str, Tensor]:
    """SAELens tensor names and shapes, with ``normalize_scale`` folded in."""
    s = sae.cfg.normalize_scale or 1.0
    tensors = {
        "W_enc": sae.W_enc * s,
        "b_enc": sae.b_enc.clone(),
        "W_dec": sae.W_dec / s,
        "b_dec": sae.b_dec / s,
    }
    threshold = getattr(sae, "threshold", None)
    if sae.cfg.arch in THRESHOLD_ARCHS:
        assert threshold is not None
        tensors["threshold"] = threshold.to(sae.W_enc.dtype).expand(sae.cfg.d_sae).clone()
    dtype = DTYPES[sae.cfg.dtype]
    return {k: v.detach().to(dtype).contiguous() for k, v in tensors.items()}


def save_sae(sae: SAE, directory: str | Path) -> Path:
    """Write ``cfg.json`` and ``sae_weights.safetensors`` (SAELens layout) atomically; returns the folder."""
    if getattr(sae, "W_skip", None) is not None:
        raise MechscopeError(
            "SAELens's layout has no skip connection: this transcoder cannot be saved in it"
        )
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS_FILE) as tmp:  # a unique temporary name per writer
        save_file(saelens_tensors(sae), tmp)
    write_atomic(folder / CFG_FILE, json.dumps(saelens_config(sae), indent=2))
    return folder


def load_sae(directory: str | Path) -> SAE:
    """Load an SAE saved by mechscope or SAELens (6.x or older layout), in eval mode."""
    folder = Path(directory)
    for name in (CFG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise MechscopeError(
                f"no {name} in {folder}: pass a folder with cfg.json and sae_weights.safetensors (SAELens layout)"
            )
    try:
        raw = json.loads((folder / CFG_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise MechscopeError(
            f"{folder / CFG_FILE} is not valid JSON ({exc.msg}): re-save the SAE"
        ) from exc
    try:
        tensors = load_file(folder / WEIGHTS_FILE)
    except (SafetensorError, OSError) as exc:
        raise MechscopeError(
            f"cannot read {folder / WEIGHTS_FILE} ({exc}): re-save the SAE"
        ) from exc
    cfg, rescale = config_from_saelens(raw, tensors)
    _check_shapes(tensors, cfg, folder)
    sae = SAE(cfg, seed=None)
    _assign(sae, tensors, rescale)
    coefficient = ((raw.get("metadata") or {}).get("mechscope") or {}).get("sparsity_coefficient")
    if sae.penalty is not None and isinstance(coefficient, (int, float)):
        sae.coefficient.fill_(float(coefficient))  # the value training ended with
    return sae.eval()


def config_from_saelens(raw: dict[str, Any], tensors: dict[str, Tensor]) -> tuple[SAEConfig, bool]:
    """An :class:`SAEConfig` from a SAELens ``cfg.json`` dict; also whether TopK rescales by decoder norms."""
    meta = raw.get("metadata") or {}
    arch_name = raw.get("architecture", "standard")
    if (
        arch_name == "standard"
        and (raw.get("activation_fn") or raw.get("activation_fn_str")) == "topk"
    ):
        arch_name = "topk"  # pre-6.0 TopK
    if arch_name not in FROM_SAELENS:
        known = ", ".join(FROM_SAELENS)
        raise MechscopeError(
            f"unsupported SAE architecture {arch_name!r} in cfg.json: mechscope loads {known}"
        )
    arch, transcoder = FROM_SAELENS[arch_name]
    mech = meta.get("mechscope") or {}
    if arch == "jumprelu" and mech.get("arch") in ("batchtopk", "matryoshka"):
        arch = mech["arch"]
    norm = raw.get("normalize_activations", "none")
    if norm not in ("none", "expected_average_only_in", None, False, True):
        raise MechscopeError(
            f"normalize_activations={norm!r} in cfg.json is not supported: mechscope loads 'none' (scale folded into the weights)"
        )

    def get(key: str, default: Any = None) -> Any:
        return meta.get(key, raw.get(key, default))

    k = raw.get("k", (raw.get("activation_fn_kwargs") or {}).get("k"))
    if arch != "topk":
        k = mech.get("k", k)
    hook = get("hook_name", get("hook_point", ""))
    d_out = raw.get("d_out") if transcoder else None
    keep = {
        f: mech[f]
        for f in ("l1_coefficient", "l0_coefficient", "bandwidth", "version", "include_first")
        if f in mech
    }
    if arch == "matryoshka" and mech.get("matryoshka_widths") is not None:
        keep["matryoshka_widths"] = tuple(int(w) for w in mech["matryoshka_widths"])
    cfg = SAEConfig(
        arch=arch,
        d_in=int(raw["d_in"]),
        d_sae=int(raw["d_sae"]),
        hook_name=hook or "",
        out_hook_name=(get("hook_name_out") or mech.get("out_hook_name") or hook or "out")
        if transcoder
        else None,
        d_out=int(d_out) if d_out is not None else None,
        k=int(k) if k is not None else None,
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", not transcoder)),
        dtype=str(raw.get("dtype", "float32")).removeprefix("torch."),
        model_name=get("model_name"),
        dataset=get("dataset_path"),
        **keep,
    )
    return cfg, bool(raw.get("rescale_acts_by_decoder_norm", False))


def _check_shapes(tensors: dict[str, Tensor], cfg: SAEConfig, folder: Path) -> None:
    expected = {
        "W_enc": (cfg.d_in, cfg.d_sae),
        "b_enc": (cfg.d_sae,),
        "W_dec": (cfg.d_sae, cfg.width_out),
        "b_dec": (cfg.width_out,),
    }
    if cfg.arch in THRESHOLD_ARCHS:
        expected["threshold"] = (cfg.d_sae,)
    for name, shape in expected.items():
        if name not in tensors:
            raise MechscopeError(
                f"{folder / WEIGHTS_FILE} has no tensor {name!r}: not an SAE in SAELens's layout"
            )
        if tuple(tensors[name].shape) != shape:
            got = list(tensors[name].shape)
            raise MechscopeError(
                f"{folder / WEIGHTS_FILE}: {name} has shape {got} but cfg.json implies {list(shape)}: the files do not match"
            )


@torch.no_grad()
def _assign(sae: SAE, tensors: dict[str, Tensor], rescale: bool) -> None:
    dtype = sae.W_enc.dtype
    w_enc, b_enc, w_dec = (
        tensors["W_enc"].to(dtype),
        tensors["b_enc"].to(dtype),
        tensors["W_dec"].to(dtype),
    )
    if (
        rescale
    ):  # SAELens TopK with rescale_acts_by_decoder_norm: fold the norms (its own inference fold)
        norms = w_dec.norm(dim=1)
        w_enc, b_enc, w_dec = w_enc * norms, b_enc * norms, w_dec / norms[:, None]
    sae.W_enc.copy_(w_enc)
    sae.b_enc.copy_(b_enc)
    sae.W_dec.copy_(w_dec)
    sae.b_dec.copy_(tensors["b_dec"].to(dtype))
    if sae.cfg.arch == "jumprelu":
        threshold = tensors["threshold"].to(dtype)
        if (threshold < 0).any() or not torch.isfinite(threshold).all():
            raise MechscopeError(
                "JumpReLU thresholds in sae_weights.safetensors must be finite and >= 0; "
                "the file is damaged or not a JumpReLU SAE"
            )
        # 0 (a plain ReLU latent) becomes the smallest positive normal number: log must be finite
        sae.log_threshold.copy_(threshold.clamp(min=torch.finfo(dtype).tiny).log())
    elif sae.cfg.arch in THRESHOLD_ARCHS:
        value = float(tensors["threshold"].double().mean())
        sae.threshold.fill_(value)
        if not math.isfinite(value):
            raise MechscopeError(
                "BatchTopK threshold in sae_weights.safetensors is not finite: re-save the SAE"
            )
