"""Gemma 3 (text-only ``gemma3_text``): Gemma 2's layer with per-head QK-norm, local/global layers.

As in Gemma 2, ``hook_attn_out``/``hook_mlp_out`` are the post-norms' outputs (what is added to the
residual). ``attn.hook_q``/``hook_k`` are the projections' outputs, before the per-head QK-norm
and RoPE. Local (sliding-window) and global layers alternate as ``config.layer_types`` says; the
masks and the two rotary bases come from transformers. Soft-capping applies only if the config
sets it (Gemma 3 checkpoints do not).
"""

from __future__ import annotations

from dataclasses import replace

from mechscope.families.gemma2 import FAMILY as GEMMA2

FAMILY = replace(GEMMA2, name="gemma3", model_types=("gemma3_text",))
