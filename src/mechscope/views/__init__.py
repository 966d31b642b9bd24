"""Views of a model on one input that a person reads: attention patterns for now.

These run the model and return plain arrays; :mod:`mechscope.viz` draws them.
"""

from __future__ import annotations

from mechscope.views.attention import (
    AttentionPatterns,
    attention_patterns,
    head_summary,
    parse_layers,
)

__all__ = ["AttentionPatterns", "attention_patterns", "head_summary", "parse_layers"]
