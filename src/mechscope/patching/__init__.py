"""Exact activation patching, batched: ``patch(model, batch, metric, "resid_pre")``.

Every analysis of paired prompts takes a :class:`~mechscope.tasks.base.TaskBatch` and a
:class:`Metric` ``metric(logits, batch) -> [batch]`` (see :mod:`mechscope.patching.pair`). See
:mod:`mechscope.patching.engine` for the algorithm and :mod:`mechscope.patching.sweeps` for the
sweeps and their TransformerLens counterparts.
"""

from mechscope.patching.api import patch
from mechscope.patching.result import PatchResult
from mechscope.patching.sweeps import SWEEPS
from mechscope.tasks.metrics import Metric

__all__ = ["SWEEPS", "Metric", "PatchResult", "patch"]
