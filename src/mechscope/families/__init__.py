"""The registry of architecture families, chosen by ``config.model_type``.

Adding a family means adding one file with a ``FAMILY`` and listing it here.
"""

from __future__ import annotations

from typing import Any

from mechscope.errors import MechscopeError
from mechscope.families import gpt2, llama, mixtral, neox
from mechscope.families.base import Dims, Family, MoESpec

FAMILIES: tuple[Family, ...] = (gpt2.FAMILY, llama.FAMILY, neox.FAMILY, mixtral.FAMILY)
_BY_MODEL_TYPE = {t: f for f in FAMILIES for t in f.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def family_for(config: Any) -> Family:
    """The family for an HF config, or an error listing the supported ``model_type`` values."""
    model_type = getattr(config, "model_type", None)
    if model_type not in _BY_MODEL_TYPE:
        raise MechscopeError(
            f"unsupported architecture model_type={model_type!r}; supported: "
            f"{', '.join(supported_model_types())}"
        )
    return _BY_MODEL_TYPE[model_type]


__all__ = ["Dims", "FAMILIES", "Family", "MoESpec", "family_for", "supported_model_types"]
