"""Head detectors: which heads do induction, previous-token, duplicate-token, sink, copy suppression.

    scores = head_scores(model)                 # HeadScores: {detector: [layer head]}
    scores.top("induction", 3)                  # [(layer, head, score), ...]
    composition_scores(model, "k")              # [layer head layer head] K-composition
    ov_copying_scores(model)                    # eigenvalue copying score of each OV circuit
    attention_patterns(model, "text", "0,5-7")  # AttentionPatterns [layer head q k] of a prompt

Pattern detectors (one batched forward over ``[bos] + x + x`` random sequences) work on every
family; weight-based scores support the separate (Llama, Mistral, Qwen2, Mixtral), GPT-2 and
GPT-NeoX layouts. :data:`DETECTORS` lists them all.
"""

from mechscope.heads.attention import (
    AttentionPatterns,
    attention_patterns,
    head_summary,
    parse_layers,
)
from mechscope.heads.composition import composition_scores
from mechscope.heads.copy_suppression import copy_suppression_scores, suppression_tokens
from mechscope.heads.copying import eigen_score, ov_copying_scores, qk_copying_scores
from mechscope.heads.patterns import masked_score, pattern_scores
from mechscope.heads.scores import (
    DEFAULT_DETECTORS,
    DETECTORS,
    Detector,
    HeadScores,
    head_scores,
)
from mechscope.heads.tokens import repeated_tokens
from mechscope.heads.weights import HeadWeights, head_weights

__all__ = [
    "AttentionPatterns",
    "DEFAULT_DETECTORS",
    "DETECTORS",
    "Detector",
    "HeadScores",
    "HeadWeights",
    "attention_patterns",
    "composition_scores",
    "copy_suppression_scores",
    "eigen_score",
    "head_scores",
    "head_summary",
    "head_weights",
    "masked_score",
    "ov_copying_scores",
    "parse_layers",
    "pattern_scores",
    "qk_copying_scores",
    "repeated_tokens",
    "suppression_tokens",
]
