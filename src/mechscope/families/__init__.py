"""The registry of architecture families, chosen by ``config.model_type``.

Adding a family means adding one file with a ``FAMILY`` and listing it here. A decoder-only model
of any other type gets the residual-only generic fallback (:mod:`mechscope.families.fallback`).
"""

from __future__ import annotations

from typing import Any

from mechscope.errors import MechscopeError
from mechscope.families import (
    falcon,
    gemma,
    gemma2,
    gemma3,
    gpt2,
    gpt_oss,
    gptj,
    granite,
    llama,
    mixtral,
    neox,
    olmo2,
    olmoe,
    opt,
    phi3,
    qwen2_moe,
    starcoder2,
)
from mechscope.families.base import Dims, Family, MoESpec
from mechscope.families.fallback import infer_family

FAMILIES: tuple[Family, ...] = (
    gpt2.FAMILY,
    llama.FAMILY,
    neox.FAMILY,
    mixtral.FAMILY,
    gemma.FAMILY,
    gemma2.FAMILY,
    gemma3.FAMILY,
    phi3.FAMILY,
    olmo2.FAMILY,
    gptj.FAMILY,
    opt.FAMILY,
    falcon.FAMILY,
    starcoder2.FAMILY,
    granite.FAMILY,
    gpt_oss.FAMILY,
    qwen2_moe.FAMILY,
    olmoe.FAMILY,
)
_BY_MODEL_TYPE = {t: f for f in FAMILIES for t in f.model_types}
# Types the fallback must not guess at, with what to do instead.
_REFUSED = {
    "gemma3": "a Gemma 3 image-text model; mechscope reads its text-only form (model_type "
    "gemma3_text, as gemma-3-1b is); load the language model alone",
}


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def family_for(config: Any, model: Any = None) -> Family:
    """The family for an HF config (adapted to it), else the fallback read from ``model``.

    Without ``model`` an unknown ``model_type`` is an error listing the supported ones.
    """
    model_type = getattr(config, "model_type", None)
    family = _BY_MODEL_TYPE.get(model_type)
    if model_type in _REFUSED:
        raise MechscopeError(
            f"unsupported architecture model_type={model_type!r}: {_REFUSED[model_type]}"
        )
    if family is None:
        if model is None or getattr(config, "is_encoder_decoder", False):
            raise MechscopeError(
                f"unsupported architecture model_type={model_type!r}; supported: "
                f"{', '.join(supported_model_types())}"
            )
        return infer_family(model)
    return family.adapt(family, config) if family.adapt else family


__all__ = ["Dims", "FAMILIES", "Family", "MoESpec", "family_for", "supported_model_types"]
