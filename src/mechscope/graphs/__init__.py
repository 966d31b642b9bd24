"""Attribution graphs: transcoders for every layer (per-layer and cross-layer), the local
replacement model of a prompt, feature-level graphs, pruning, scores and verification.
See docs/graphs.md.
"""

from mechscope.graphs.attribute import GraphConfig, attribute
from mechscope.graphs.graph import Graph
from mechscope.graphs.prune import prune, scores
from mechscope.graphs.transcoders import TranscoderSet, from_saes

__all__ = ["Graph", "GraphConfig", "TranscoderSet", "attribute", "from_saes", "prune", "scores"]
