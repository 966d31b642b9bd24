"""What a feature database is built from: ``mlp:L``, ``attn:L`` and ``sae:DIR`` sources.

Each source is a :class:`~mechscope.neurons.Readout` (the same readouts ``mechscope neurons``
scans) plus the name it has in the database:

- ``mlp:L``: every MLP neuron of layer ``L`` at ``blocks.L.mlp.hook_post``;
- ``attn:L``: every head of layer ``L``, read as the L2 norm of its output ``attn.hook_z``; its
  write direction (logit table, neighbours) and negatives are defined in :mod:`.heads`;
- ``sae:DIR``: every latent of the SAE or transcoder saved in ``DIR`` (SAELens layout), read at
  its own hook in model units; named ``sae:<folder name>`` in the database;
- ``crosscoder:DIR`` (``crosscoder:DIR@finetuned``): every latent of the crosscoder saved in ``DIR``
  (``mechscope diff --crosscoder``) read from this model's activations as the base (finetuned)
  side (:func:`mechscope.diff.crosscoder.crosscoder_readout`); named ``crosscoder:<folder name>``
  (``...@finetuned``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.neurons.readouts import Readout, head_outputs, mlp_neurons, sae_latents

__all__ = ["Source", "capture_sites", "check_sources", "parse_source"]

KINDS = {"mlp": "neuron", "attn": "head", "sae": "latent", "crosscoder": "latent"}


@dataclass(frozen=True, eq=False)
class Source:
    name: str  # the name in the database, e.g. mlp:3 or sae:my-sae
    spec: str  # as given, e.g. sae:/path/to/my-sae
    kind: str  # neuron, head or latent
    readout: Readout
    config: dict[str, Any]  # provenance stored with the source

    @property
    def hook_name(self) -> str:
        return self.readout.site


def _layer(spec: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise MechscopeError(
            f"bad source {spec!r}: the layer must be a number, e.g. mlp:3"
        ) from None


def parse_source(model: HookedModel, spec: str) -> Source:
    """The source named by ``spec`` (module docstring)."""
    prefix, _, rest = spec.partition(":")
    if prefix not in KINDS or not rest:
        raise MechscopeError(
            f"bad source {spec!r}; use mlp:LAYER, attn:LAYER, sae:DIR or crosscoder:DIR"
        )
    if prefix == "mlp":
        return Source(spec, spec, "neuron", mlp_neurons(model, _layer(spec, rest)), {})
    if prefix == "attn":
        layer = _layer(spec, rest)
        config = {"layer": layer, "d_head": model.dims.d_head, "write": "mean top-example output"}
        return Source(spec, spec, "head", head_outputs(model, layer), config)
    if prefix == "crosscoder":
        return _crosscoder(model, spec, rest)
    from mechscope.sae import load_sae

    folder = Path(rest).expanduser()
    sae = load_sae(folder)
    hook = sae.cfg.hook_name
    if hook not in model.sites:
        raise MechscopeError(
            f"the SAE in {folder} reads {hook}, which this model does not have; "
            "pass an SAE trained on this model"
        )
    config = {"path": str(folder.resolve()), "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae}
    return Source(f"sae:{folder.resolve().name}", spec, "latent", sae_latents(sae), config)


def _crosscoder(model: HookedModel, spec: str, rest: str) -> Source:
    from mechscope.diff.crosscoder import crosscoder_readout

    path, _, side = (
        rest.rpartition("@") if rest.endswith(("@base", "@finetuned")) else (rest, "", "")
    )
    folder = Path(path).expanduser()
    readout, config = crosscoder_readout(folder, side or "base")
    if readout.site not in model.sites:
        raise MechscopeError(
            f"the crosscoder in {folder} reads {readout.site}, which this model does not have; "
            "pass a crosscoder trained on this model"
        )
    config["spec"] = spec
    name = f"crosscoder:{folder.resolve().name}" + ("@finetuned" if side == "finetuned" else "")
    return Source(name, spec, "latent", readout, config)


def capture_sites(model: HookedModel, sites: list[str], tokens: torch.Tensor) -> dict[str, Any]:
    """The activations at ``sites`` for ``tokens`` [batch pos] in one forward, stopped once the
    last of them has run (later layers and the unembedding never run)."""
    store: dict[str, torch.Tensor] = {}

    def grab(t: torch.Tensor, hook: Any) -> None:
        store[hook.name] = t.detach()

    with torch.no_grad(), model.hooks(fwd=[(s, grab) for s in sites], stop_after=sites):
        model.forward(tokens)
    missing = [s for s in sites if s not in store]
    if missing:
        raise MechscopeError(f"the forward pass never reached {missing[0]}")
    return store


def check_sources(model: HookedModel, sources: list[Source]) -> None:
    """Fail in one line before the pass when a source's dimensions do not fit the model (an SAE
    of another width), or two sources share a name."""
    names = [s.name for s in sources]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise MechscopeError(f"source {dup} is given twice; give each source once")
    if not sources:
        raise MechscopeError("no source to build; pass --source mlp:L, attn:L or sae:DIR")
    probe = torch.zeros((1, 2), dtype=torch.long)
    acts = capture_sites(model, sorted({s.hook_name for s in sources}), probe)
    for s in sources:
        if s.kind != "latent":
            continue
        width = acts[s.hook_name].shape[-1]
        if width != s.config["d_in"]:
            raise MechscopeError(
                f"the SAE {s.spec} takes d_in={s.config['d_in']} but {s.hook_name} of this model "
                f"has width {width}; pass an SAE trained on this model and site"
            )
