"""Transcoder sets on disk, in two layouts, so they move between mechscope, SAELens and
circuit-tracer.

``saelens`` (mechscope's own):

- per-layer set: ``layer_L/cfg.json`` + ``layer_L/sae_weights.safetensors`` for every layer, each
  a SAELens transcoder (:func:`mechscope.sae.save_sae`);
- cross-layer transcoder: ``cfg.json`` (SAELens-style keys, ``architecture: "clt"``,
  ``n_layers``, ``activation``, ``k``; ``metadata`` with ``model_name``, ``hook_name`` and
  ``hook_name_out`` as patterns with ``{layer}``) + ``sae_weights.safetensors`` holding
  ``W_enc [layer d_in d_sae]``, ``b_enc``, ``b_dec [layer d_out]``, ``threshold`` and one
  ``W_dec_L [d_sae n_layers-L d_out]`` per layer.

``circuit_tracer`` (what circuit-tracer loads): ``config.yaml`` with ``model_kind``
(``transcoder_set`` or ``cross_layer_transcoder``), ``model_name``, ``feature_input_hook:
mlp.hook_in``, ``feature_output_hook: hook_mlp_out``; per-layer files ``layer_L.safetensors``
(``W_enc [d_sae d_model]``, ``W_dec``, ``b_enc``, ``b_dec``, ``activation_function.threshold``)
or, for a CLT, ``W_enc_L.safetensors`` (``W_enc_L [d_sae d_model]``, ``b_enc_L``, ``b_dec_L``,
``threshold_L``) and ``W_dec_L.safetensors`` (``W_dec_L [d_sae n_layers-L d_model]``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mechscope.errors import MechscopeError
from mechscope.files import atomic_folder, write_atomic
from mechscope.graphs.transcoders import TranscoderSet, from_saes, in_site, out_site

__all__ = ["LAYOUTS", "load_transcoders", "save_transcoders", "to_saes"]

LAYOUTS = ("saelens", "circuit_tracer")
INDEX = "mechscope.json"  # the model the transcoders belong to (name, weights fingerprint)
CT_ACT = {"jumprelu": "jump_relu", "relu": "relu", "topk": "topk"}


def to_saes(tcs: TranscoderSet) -> list[Any]:
    """A per-layer set as mechscope SAE transcoders (one per layer)."""
    from mechscope.sae import SAE, SAEConfig

    if tcs.cross_layer:
        raise MechscopeError("a cross-layer transcoder is not a list of per-layer transcoders")
    out = []
    for layer in range(tcs.n_layers):
        cfg = SAEConfig(
            arch=tcs.activation, d_in=tcs.d_model, d_sae=tcs.d_sae, hook_name=in_site(layer),
            out_hook_name=out_site(layer), k=tcs.k, apply_b_dec_to_input=False,
            model_name=tcs.model_name,
        )  # fmt: skip
        sae = SAE(cfg, seed=None)
        with torch.no_grad():
            sae.W_enc.copy_(tcs.W_enc[layer])
            sae.b_enc.copy_(tcs.b_enc[layer])
            sae.W_dec.copy_(tcs.W_dec[layer][:, 0])
            sae.b_dec.copy_(tcs.b_dec[layer])
            if tcs.threshold is not None:
                sae.log_threshold.copy_(tcs.threshold[layer].clamp_min(1e-30).log())
        out.append(sae.eval())
    return out


def save_transcoders(tcs: TranscoderSet, folder: str | Path, layout: str = "saelens") -> Path:
    """Write ``tcs`` to ``folder`` in ``layout`` (atomically: a complete folder or none)."""
    if layout not in LAYOUTS:
        raise MechscopeError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    target = Path(folder)
    tcs = tcs.to(torch.float32)
    with atomic_folder(target, replace=True) as tmp:
        ident = {"model_name": tcs.model_name, "model_fingerprint": tcs.fingerprint}
        write_atomic(tmp / INDEX, json.dumps(ident, indent=2))
        if layout == "circuit_tracer":
            _save_tracer(tcs, tmp)
        elif tcs.cross_layer:
            _save_clt(tcs, tmp)
        else:
            from mechscope.sae import save_sae

            for layer, sae in enumerate(to_saes(tcs)):
                save_sae(sae, tmp / f"layer_{layer}")
    return target


def _clt_tensors(tcs: TranscoderSet) -> dict[str, torch.Tensor]:
    t = {
        "W_enc": torch.stack(tcs.W_enc),
        "b_enc": torch.stack(tcs.b_enc),
        "b_dec": tcs.b_dec.clone(),
    }
    if tcs.threshold is not None:
        t["threshold"] = torch.stack(tcs.threshold)
    t.update({f"W_dec_{i}": w.contiguous() for i, w in enumerate(tcs.W_dec)})
    return {k: v.contiguous() for k, v in t.items()}


def _save_clt(tcs: TranscoderSet, folder: Path) -> None:
    save_file(_clt_tensors(tcs), str(folder / "sae_weights.safetensors"))
    cfg = {
        "architecture": "clt",
        "d_in": tcs.d_model,
        "d_sae": tcs.d_sae,
        "d_out": tcs.d_model,
        "n_layers": tcs.n_layers,
        "activation": tcs.activation,
        "k": tcs.k,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "metadata": {
            "model_name": tcs.model_name,
            "hook_name": "blocks.{layer}.mlp.hook_in",
            "hook_name_out": "blocks.{layer}.hook_mlp_out",
        },
    }
    write_atomic(folder / "cfg.json", json.dumps(cfg, indent=2))


def _save_tracer(tcs: TranscoderSet, folder: Path) -> None:
    import yaml

    kind = "cross_layer_transcoder" if tcs.cross_layer else "transcoder_set"
    for i in range(tcs.n_layers):
        thr = None if tcs.threshold is None else tcs.threshold[i].contiguous()
        if tcs.cross_layer:
            enc = {f"W_enc_{i}": tcs.W_enc[i].T.contiguous(), f"b_enc_{i}": tcs.b_enc[i],
                   f"b_dec_{i}": tcs.b_dec[i]}  # fmt: skip
            if thr is not None:
                enc[f"threshold_{i}"] = thr
            save_file(enc, str(folder / f"W_enc_{i}.safetensors"))
            save_file(
                {f"W_dec_{i}": tcs.W_dec[i].contiguous()}, str(folder / f"W_dec_{i}.safetensors")
            )
            continue
        one = {"W_enc": tcs.W_enc[i].T.contiguous(), "W_dec": tcs.W_dec[i][:, 0].contiguous(),
               "b_enc": tcs.b_enc[i], "b_dec": tcs.b_dec[i]}  # fmt: skip
        if thr is not None:
            one["activation_function.threshold"] = thr
        save_file(one, str(folder / f"layer_{i}.safetensors"))
    conf = {
        "model_kind": kind,
        "model_name": tcs.model_name,
        "scan": f"mechscope-{tcs.model_name or 'transcoders'}",
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "hook_mlp_out",
        "activation": CT_ACT[tcs.activation],
        "k": tcs.k,
    }
    if not tcs.cross_layer:
        conf["transcoders"] = [f"layer_{i}.safetensors" for i in range(tcs.n_layers)]
    write_atomic(folder / "config.yaml", yaml.safe_dump(conf, sort_keys=False))


# -- loading --------------------------------------------------------------------------------------


def load_transcoders(folder: str | Path, model: Any = None) -> TranscoderSet:
    """A transcoder set from ``folder`` in either layout; with ``model``, checked against it."""
    p = Path(folder)
    if not p.is_dir():
        raise MechscopeError(f"no transcoder folder at {p}: pass a folder of transcoders")
    if (p / "W_enc_0.safetensors").is_file():
        tcs = _load_tracer_clt(p)
    elif (p / "cfg.json").is_file():
        tcs = _load_clt(p)
    elif (p / "config.yaml").is_file() or list(p.glob("layer_*.safetensors")):
        tcs = _load_layers(p, model, tracer=True)
    elif list(p.glob("layer_*/cfg.json")):
        tcs = _load_layers(p, model, tracer=False)
    else:
        raise MechscopeError(
            f"{p} holds no transcoders (cfg.json, layer_L/, config.yaml, layer_L.safetensors or "
            "W_enc_L.safetensors): pass a folder written by `mechscope graph train`"
        )
    if (p / INDEX).is_file():
        try:
            ident = json.loads((p / INDEX).read_text())
        except json.JSONDecodeError as exc:
            raise MechscopeError(f"{p / INDEX} is not valid JSON ({exc.msg})") from exc
        tcs.model_name = ident.get("model_name") or tcs.model_name
        tcs.fingerprint = ident.get("model_fingerprint")
    if model is not None:
        tcs.check_model(model)
    return tcs


def _read(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise MechscopeError(f"cannot read {path} ({exc}): the file is damaged") from exc


def _layer_numbers(names: list[str], pattern: str, folder: Path) -> list[int]:
    found = sorted(int(m.group(1)) for n in names if (m := re.fullmatch(pattern, n)))
    missing = sorted(set(range(max(found) + 1)) - set(found)) if found else []
    if missing:
        raise MechscopeError(f"{folder} lacks the transcoders of layers {missing}: add them")
    return found


def _load_clt(p: Path) -> TranscoderSet:
    try:
        cfg = json.loads((p / "cfg.json").read_text())
    except json.JSONDecodeError as exc:
        raise MechscopeError(f"{p / 'cfg.json'} is not valid JSON ({exc.msg})") from exc
    if cfg.get("architecture") != "clt":
        raise MechscopeError(
            f"{p} holds one SAE, not a transcoder set: pass a folder of layer_L/ folders or a CLT"
        )
    t = _read(p / "sae_weights.safetensors")
    n = int(cfg["n_layers"])
    _layer_numbers([k for k in t if k.startswith("W_dec_")], r"W_dec_(\d+)", p)
    return TranscoderSet(
        list(t["W_enc"].unbind(0)), list(t["b_enc"].unbind(0)), [t[f"W_dec_{i}"] for i in range(n)],
        t["b_dec"], cfg.get("activation", "jumprelu"),
        list(t["threshold"].unbind(0)) if "threshold" in t else None, cfg.get("k"),
        (cfg.get("metadata") or {}).get("model_name"),
    )  # fmt: skip


def _tracer_conf(p: Path) -> dict[str, Any]:
    import yaml

    if not (p / "config.yaml").is_file():
        return {}
    try:
        conf = yaml.safe_load((p / "config.yaml").read_text()) or {}
    except yaml.YAMLError as exc:
        raise MechscopeError(f"{p / 'config.yaml'} is not valid YAML ({exc})") from exc
    return conf if isinstance(conf, dict) else {}


def _load_tracer_clt(p: Path) -> TranscoderSet:
    conf = _tracer_conf(p)
    layers = _layer_numbers(
        [q.name for q in p.glob("W_enc_*.safetensors")], r"W_enc_(\d+)\.safetensors", p
    )
    w_enc, b_enc, b_dec, thr, w_dec = [], [], [], [], []
    for i in layers:
        enc = _read(p / f"W_enc_{i}.safetensors")
        w_enc.append(enc[f"W_enc_{i}"].T.contiguous())
        b_enc.append(enc[f"b_enc_{i}"])
        b_dec.append(enc[f"b_dec_{i}"])
        if f"threshold_{i}" in enc:
            thr.append(enc[f"threshold_{i}"].reshape(-1))
        w_dec.append(_read(p / f"W_dec_{i}.safetensors")[f"W_dec_{i}"])
    act = {"jump_relu": "jumprelu"}.get(conf.get("activation", ""), conf.get("activation"))
    act = act or ("jumprelu" if thr else "relu")
    return TranscoderSet(
        w_enc, b_enc, w_dec, torch.stack(b_dec), act, thr or None, conf.get("k"),
        conf.get("model_name"),
    )  # fmt: skip


def _load_layers(p: Path, model: Any, tracer: bool) -> TranscoderSet:
    from mechscope.sae import load_sae

    if tracer:
        conf = _tracer_conf(p)
        names = [q.name for q in p.glob("layer_*.safetensors")]
        layers = _layer_numbers(names, r"layer_(\d+)\.safetensors", p)
        if len(conf.get("transcoders") or []) > len(layers):
            layers = list(range(len(conf["transcoders"])))
        saes = [load_sae(p, layer=i, format="circuit_tracer") for i in layers]
        name = conf.get("model_name")
    else:
        names = [q.parent.name for q in p.glob("layer_*/cfg.json")]
        layers = _layer_numbers(names, r"layer_(\d+)", p)
        saes = [load_sae(p / f"layer_{i}") for i in layers]
        name = saes[0].cfg.model_name
    for i, sae in enumerate(saes):  # circuit-tracer names sites in TransformerLens's words
        c = sae.cfg
        if c.hook_name.endswith("ln2.hook_normalized") and model is not None:
            saes[i] = load_sae(p, layer=i, format="circuit_tracer", model=model)
    return from_saes(saes, name)
