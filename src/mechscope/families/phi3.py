"""Phi-3: Llama-style layers with one fused ``qkv_proj`` and one fused ``gate_up_proj``.

``qkv_proj`` writes ``[q | k | v]`` (k and v ``n_kv_heads * d_head`` wide); ``gate_up_proj``
writes ``[gate | up]``: ``mlp.hook_pre`` is the gate half (the activation's input) and
``mlp.hook_pre_linear`` the up half.
"""

from __future__ import annotations

from dataclasses import replace

from mechscope.families.llama import FAMILY as LLAMA

FAMILY = replace(
    LLAMA,
    name="phi3",
    model_types=("phi3",),
    qkv="concat",
    q="self_attn.qkv_proj",
    k=None,
    v=None,
    mlp_in="mlp.gate_up_proj",
    mlp_up="mlp.gate_up_proj",
    mlp_gate_up=True,
)
