"""Comparing models (docs/compare.md): layer-by-layer similarity (``similarity``: streamed
debiased linear CKA and orthogonal Procrustes; ``align``: the same text under two tokenizers;
``run``: :func:`compare_models`), circuit diffs and progress measures over training checkpoints.
"""
