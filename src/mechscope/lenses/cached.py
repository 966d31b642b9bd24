"""A tuned lens trained once per model and budget, kept under ``~/.cache/mechscope/tuned_lens/``.

``cached_tuned_lens(model)`` returns the lens stored at
``<cache>/tuned_lens/<model fingerprint>-<tokens>.safetensors`` (``<cache>`` is
``$MECHSCOPE_CACHE`` or ``~/.cache/mechscope``), training it on the built-in corpus first if it is
not there. Training writes the file atomically and resumes from its checkpoint after a crash.
Training holds the file's lock: a second process that wants the same lens meanwhile waits for it
and loads the first one's copy (or, if that run died, trains it, resuming from its checkpoint).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from mechscope.corpus import Corpus
from mechscope.errors import FolderInUseError
from mechscope.files import cache_root
from mechscope.lenses.tuned_lens import TunedLens, model_fingerprint
from mechscope.lenses.tuned_train import TrainConfig, train_tuned_lens
from mechscope.models.hooked import HookedModel

__all__ = ["REPORT_TOKENS", "cached_tuned_lens", "tuned_lens_path"]

# The report's budget: about a minute of training for SmolLM2 on 2 CPU threads, and enough to
# beat the logit lens at every layer but the last on held-out text (docs/lenses.md).
REPORT_TOKENS = TrainConfig().tokens
WAIT_SECONDS = 1.0  # between looks at a lens another process is training


def tuned_lens_path(model: HookedModel, tokens: int, corpus: Corpus | None = None) -> Path:
    """Where :func:`cached_tuned_lens` keeps the lens of ``model`` for a budget of ``tokens``."""
    root = cache_root()
    name = f"{model_fingerprint(model)}-{tokens}"
    if corpus is not None:
        name += f"-{corpus.name}-{corpus.fingerprint}"
    return root / "tuned_lens" / f"{name}.safetensors"


def cached_tuned_lens(
    model: HookedModel,
    *,
    tokens: int = REPORT_TOKENS,
    corpus: Corpus | None = None,
    config: TrainConfig | None = None,
    progress: bool = True,
) -> TunedLens:
    """The tuned lens of ``model`` trained on ``tokens`` corpus tokens, trained on first use.

    ``corpus`` None is the built-in corpus. The other settings are ``config``'s (default:
    :class:`TrainConfig`'s); the file name records only the model, ``tokens`` and the corpus.
    """
    path = tuned_lens_path(model, tokens, corpus)
    cfg = dataclasses.replace(config or TrainConfig(), tokens=tokens)
    waiting = False
    while True:
        if path.is_file():
            return TunedLens.load(path, model)
        try:
            return train_tuned_lens(model, corpus, cfg, out=path, quiet=not progress, reuse=True)
        except FolderInUseError as exc:  # another process trains this lens: use its copy
            if progress and not waiting:
                print(f"waiting for the run that trains this lens: {exc}", file=sys.stderr)
            waiting = True
            time.sleep(WAIT_SECONDS)
