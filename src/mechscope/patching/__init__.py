"""Exact activation patching, batched: ``patch(model, clean, corrupt, metric, "resid_pre")``.

See :mod:`mechscope.patching.engine` for the algorithm and :mod:`mechscope.patching.sweeps` for
the sweeps and their TransformerLens counterparts.
"""

from mechscope.patching.api import patch
from mechscope.patching.engine import Metric
from mechscope.patching.result import PatchResult
from mechscope.patching.sweeps import SWEEPS

__all__ = ["SWEEPS", "Metric", "PatchResult", "patch"]
