"""Attribution: direct logit attribution and attribution patching.

- :func:`direct_logit_attribution`: the logit difference split exactly into embeddings, attention
  layers, heads, MLP layers and neurons (:class:`DLAResult`);
- :func:`attribution_patch`: a first-order estimate of any :func:`mechscope.patching.patch` sweep
  from two forwards and one backward (:class:`AttributionResult`, a ``PatchResult``);
  :func:`attribution_patch_sweeps` serves several sweeps from the same passes.
"""

from mechscope.attribution.dla import DLAResult, direct_logit_attribution, logit_diff_directions
from mechscope.attribution.patching import (
    SPECS,
    AttributionResult,
    attribution_patch,
    attribution_patch_sweeps,
)

__all__ = [
    "SPECS",
    "AttributionResult",
    "DLAResult",
    "attribution_patch",
    "attribution_patch_sweeps",
    "direct_logit_attribution",
    "logit_diff_directions",
]
