"""mechscope: mechanistic interpretability for Hugging Face causal language models.

``mechscope.load("smollm2-135m")`` gives a :class:`HookedModel` with TransformerLens's hook
names; ``run_with_cache``, ``hooks`` and ``run_with_hooks`` read and rewrite any site.

The top-level names are resolved on first use (module ``__getattr__``), so ``import mechscope``
and the ``mechscope`` command's ``--help`` do not import torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
DEFAULT_MODEL = "smollm2-135m"

# name -> module it lives in; imported when the name is first read
_LAZY = {
    "Cache": "mechscope.cache",
    "stack": "mechscope.cache",
    "HookedModel": "mechscope.models.hooked",
    "MechscopeError": "mechscope.errors",
}

if TYPE_CHECKING:
    import torch

    from mechscope.cache import Cache, stack
    from mechscope.errors import MechscopeError
    from mechscope.models.hooked import HookedModel


def load(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    attn: str = "sdpa",
    trust_remote_code: bool = False,
    progress: bool = True,
    **kwargs: Any,
) -> HookedModel:
    """Load a HF causal LM (hub id, local folder, ``.gguf`` file or the alias ``smollm2-135m``).

    ``dtype`` is the weights' dtype (default ``torch.float32``).
    """
    import torch

    from mechscope.models.hooked import HookedModel
    from mechscope.models.loading import load_hf

    hf, tokenizer, provenance = load_hf(
        name_or_path,
        dtype=torch.float32 if dtype is None else dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        progress=progress,
        **kwargs,
    )
    return HookedModel(hf, tokenizer, attn=attn, provenance=provenance)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mechscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = ["Cache", "DEFAULT_MODEL", "HookedModel", "MechscopeError", "load", "stack"]
