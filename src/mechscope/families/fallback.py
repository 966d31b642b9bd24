"""The generic fallback for a decoder-only model with no family file.

It reads the module tree instead of a family file: the input embedding and the unembedding (HF's
``get_input_embeddings``/``get_output_embeddings``), the decoder-layer list (the ``nn.ModuleList``
of ``num_hidden_layers`` blocks) and the final norm (the first module registered after that list
whose class name says it is a norm). It exposes only the residual stream: ``hook_embed`` (the
embedding module's output), ``blocks.L.hook_resid_pre``/``hook_resid_post`` (each layer's input
and output) and nothing inside a block. That suffices for the logit lens, probes, activation
harvesting and SAEs on the residual stream; attention, head, MLP-neuron and patching analyses
below the block level need a family file (see docs/sites.md).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mechscope.errors import MechscopeError
from mechscope.families.base import Dims, Family, config_get

_NO_CTX = 1 << 20  # models without a context length (ALiBi) accept any length


def _refuse(model: nn.Module, why: str) -> MechscopeError:
    return MechscopeError(
        f"unsupported architecture model_type={getattr(model.config, 'model_type', None)!r}: "
        f"no family file, and the generic fallback cannot read it ({why}); "
        "add a family file in mechscope/families"
    )


def _path_of(model: nn.Module, target: nn.Module | None) -> str | None:
    if target is None:
        return None
    return next((name for name, m in model.named_modules() if m is target), None)


def _layer_list(model: nn.Module, n_layers: int | None) -> tuple[str, nn.ModuleList]:
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if n_layers is not None:
        lists = [(n, m) for n, m in lists if len(m) == n_layers]
    if not lists:
        raise _refuse(model, "no decoder-layer list found")
    return max(lists, key=lambda nm: sum(p.numel() for p in nm[1].parameters()))


def _final_norm(model: nn.Module, layers: str) -> str | None:
    """The first norm registered after the layer list, beside it (``ln_f``, ``norm``, ...)."""
    parent, _, name = layers.rpartition(".")
    children = list(model.get_submodule(parent).named_children() if parent else [])
    names = [n for n, _ in children]
    for child, module in children[names.index(name) + 1 :]:
        if "norm" in type(module).__name__.lower():
            return f"{parent}.{child}"
    return None


def infer_family(model: nn.Module) -> Family:
    """A residual-only :class:`Family` read from ``model``'s module tree."""
    config = model.config
    model_type = getattr(config, "model_type", None)
    if any(getattr(m, "is_causal", True) is False for m in model.modules()):
        raise _refuse(model, "its attention is not causal: an encoder, not a decoder-only LM")
    n_cfg = config_get(config, "num_hidden_layers", "n_layer", "num_layers")
    layers, _ = _layer_list(model, n_cfg)
    embed = _path_of(model, model.get_input_embeddings())
    unembed = _path_of(model, model.get_output_embeddings())
    if embed is None or unembed is None:
        raise _refuse(model, "no input embedding or unembedding found")
    final_norm = _final_norm(model, layers)
    if final_norm is None:
        raise _refuse(model, f"no final norm found after {layers}")
    return residual_family(
        f"fallback:{model_type}", (str(model_type),), embed, layers, final_norm, unembed
    )


def residual_family(
    name: str, model_types: tuple[str, ...], embed: str, layers: str, final_norm: str, unembed: str
) -> Family:
    """A family that knows only the embedding, the layer list, the final norm and the unembedding:
    its sites are ``hook_embed`` and ``blocks.L.hook_resid_pre/post``."""
    return Family(
        name=name,
        model_types=model_types,
        dims=fallback_dims,
        embed=embed,
        layers=layers,
        final_norm=final_norm,
        unembed=unembed,
        ln1=None,
        ln2=None,
        attn=None,
        qkv="separate",
        q=None,
        k=None,
        v=None,
        o=None,
        mlp=None,
        mlp_in=None,
        mlp_up=None,
        mlp_out=None,
        residual_only=True,
    )


def fallback_dims(config: Any) -> Dims:
    d_model = config_get(config, "hidden_size", "n_embd", "d_model")
    n_heads = config_get(config, "num_attention_heads", "n_head", "n_heads", default=1)
    n_kv = config_get(config, "num_key_value_heads", "num_kv_heads", default=n_heads)
    return Dims(
        n_layers=config_get(config, "num_hidden_layers", "n_layer", "num_layers"),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=n_kv if n_heads % n_kv == 0 else n_heads,
        d_head=config_get(config, "head_dim", default=d_model // n_heads),
        d_mlp=config_get(config, "intermediate_size", "ffn_dim", "n_inner", default=4 * d_model),
        d_vocab=config.vocab_size,
        n_ctx=config_get(
            config, "max_position_embeddings", "n_positions", "seq_length", default=_NO_CTX
        ),
        norm="unknown",
        logit_softcap=getattr(config, "final_logit_softcapping", None),
        logit_divisor=float(getattr(config, "logits_scaling", 1.0) or 1.0),
    )
