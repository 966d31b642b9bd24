"""mechscope: mechanistic interpretability for Hugging Face causal language models.

``mechscope.load("smollm2-135m")`` gives a :class:`HookedModel` with TransformerLens's hook
names; ``run_with_cache``, ``hooks`` and ``run_with_hooks`` read and rewrite any site.
"""

from __future__ import annotations

from typing import Any

import torch

from mechscope.cache import Cache, stack
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel

__version__ = "0.1.0"
DEFAULT_MODEL = "smollm2-135m"


def load(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attn: str = "sdpa",
    trust_remote_code: bool = False,
    progress: bool = True,
    **kwargs: Any,
) -> HookedModel:
    """Load a HF causal LM (hub id, local folder, ``.gguf`` file or the alias ``smollm2-135m``)."""
    from mechscope.models.loading import load_hf

    hf, tokenizer, provenance = load_hf(
        name_or_path,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        progress=progress,
        **kwargs,
    )
    return HookedModel(hf, tokenizer, attn=attn, provenance=provenance)


__all__ = ["Cache", "DEFAULT_MODEL", "HookedModel", "MechscopeError", "load", "stack"]
