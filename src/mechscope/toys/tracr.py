"""Tracr-compiled transformers as hookable models whose circuit is known exactly.

Tracr (Lindner et al. 2023, "Tracr: Compiled Transformers as a Laboratory for Interpretability")
compiles a RASP program into transformer weights: each RASP operation becomes one attention head
or (part of) one MLP, reading and writing named directions of the residual stream. The compiled
model has no layer norm, ReLU MLPs, learned token and position embeddings, a BOS token at
position 0 and a linear unembedding of the final residual. ``benchmarks/peers/tracr_export.py``
compiles programs in Tracr's own environment (jax) and exports their weights as ``.npz`` with the
layout as ``.json``; this module needs neither jax nor Tracr.

Steps of :func:`load_tracr`:

1. Build a Hugging Face GPT-2 (learned positions, ReLU MLP, fused q|k|v) of Tracr's sizes. GPT-2
   splits ``n_embd`` into ``n_head`` heads, Tracr's key size is free: the residual is padded with
   zero directions to ``n_head * max(key_size, ceil(d_model / n_head))`` and each head's q/k/v to
   that width. Padding with zeros changes no product.
2. Fold Tracr's ``1 / sqrt(key_size)`` attention scale into W_Q (GPT-2 divides by
   ``sqrt(d_head)`` of the padded head).
3. Replace the three LayerNorms by identities (the only change to the HF modules): Tracr
   compiles with ``layer_norm=False``.

The result's logits over Tracr's output vocabulary equal Tracr's compiled forward (tested to
float tolerance against Tracr's own logits, exported with the weights). A numerical program has
one output direction; the vocabulary is padded with columns whose logit is always 0, so
``logit_diff`` with ``wrong`` a padded column reads the output value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.tasks.base import TaskBatch

Tensor = torch.Tensor


@dataclass(frozen=True)
class TracrModel:
    """A compiled program: the hookable model, its task, Tracr's weights and reference logits.

    ``weights`` are Tracr's arrays by Haiku name (``transformer/layer_0/attn/query/w`` ...);
    ``meta`` is the exported JSON (config, residual labels, vocabularies, layout);
    ``ref_tokens`` [n pos] and ``ref_logits`` [n pos d_vocab_out] are Tracr's own forward;
    ``ref_attn_logits`` [layer n' head pos pos] (scaled; -1e30 above the diagonal) and
    ``ref_residuals`` [2 layer, n' pos d_model] (after each attention and MLP) its internals on
    the first n' = 16 of those inputs.
    """

    name: str
    model: HookedModel
    batch: TaskBatch
    weights: dict[str, np.ndarray]
    meta: dict[str, Any]
    ref_tokens: Tensor
    ref_logits: Tensor
    ref_attn_logits: Tensor
    ref_residuals: Tensor

    @property
    def n_out(self) -> int:
        """Tracr's output vocabulary size (the first ``n_out`` logits are Tracr's)."""
        return int(self.weights["unembed"].shape[1])


def load_tracr(path: str | Path) -> TracrModel:
    """Load ``NAME.npz`` (and ``NAME.json`` beside it) written by ``tracr_export.py``."""
    npz = Path(path).with_suffix(".npz")
    meta_path = npz.with_suffix(".json")
    if not npz.is_file() or not meta_path.is_file():
        raise MechscopeError(
            f"no Tracr export at {npz} (+ .json); write one with benchmarks/peers/tracr_export.py"
        )
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(meta_path.read_text())
    weights = {k: v for k, v in arrays.items() if "/" in k or k == "unembed"}
    hf = gpt2_from_tracr(weights, meta["config"])
    model = HookedModel(hf, provenance={"name": f"tracr-{meta['program']}", "source": str(npz)})
    batch = _batch(meta["program"], arrays)
    return TracrModel(
        name=meta["program"],
        model=model,
        batch=batch,
        weights=weights,
        meta=meta,
        ref_tokens=torch.from_numpy(arrays["ref_tokens"]).long(),
        ref_logits=torch.from_numpy(arrays["ref_logits"]).float(),
        ref_attn_logits=torch.from_numpy(arrays["ref_attn_logits"]).float(),
        ref_residuals=torch.from_numpy(arrays["ref_residuals"]).float(),
    )


def _batch(name: str, arrays: dict[str, np.ndarray]) -> TaskBatch:
    clean = torch.from_numpy(arrays["clean"]).long()
    corrupt = torch.from_numpy(arrays["corrupt"]).long()
    last = torch.full((clean.shape[0],), clean.shape[1] - 1)
    return TaskBatch(
        name=f"tracr-{name}",
        clean_tokens=clean,
        corrupt_tokens=corrupt,
        clean_mask=torch.ones_like(clean),
        corrupt_mask=torch.ones_like(corrupt),
        answer_ids=torch.from_numpy(arrays["answer"]).long(),
        wrong_ids=torch.from_numpy(arrays["wrong"]).long(),
        last_pos=last,
        corrupt_last_pos=last.clone(),
    )


def _layer(w: dict[str, np.ndarray], layer: int, part: str) -> tuple[np.ndarray, np.ndarray]:
    key = f"transformer/layer_{layer}/{part}"
    weight = w[f"{key}/w"]
    bias = w.get(f"{key}/b", np.zeros(weight.shape[1], weight.dtype))
    return weight, bias


def gpt2_from_tracr(w: dict[str, np.ndarray], cfg: dict[str, Any]) -> nn.Module:
    """A GPT-2 LM with Tracr's weights and identity layer norms (see the module docstring)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    if cfg.get("layer_norm", False):
        raise MechscopeError("this Tracr export uses layer norm; compile with layer_norm=False")
    if not cfg.get("causal", False):
        raise MechscopeError(
            "this Tracr export is not causal; GPT-2 masks causally: compile with causal=True"
        )
    n_heads, ks = cfg["num_heads"], cfg["key_size"]
    tok, pos, unembed = w["token_embed/embeddings"], w["pos_embed/embeddings"], w["unembed"]
    d = tok.shape[1]
    d_head = max(ks, math.ceil(d / n_heads))
    width = n_heads * d_head
    vocab = max(tok.shape[0], unembed.shape[1], 2)
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=pos.shape[0],
        n_embd=width,
        n_layer=cfg["num_layers"],
        n_head=n_heads,
        n_inner=cfg["mlp_hidden_size"],
        activation_function="relu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
        bos_token_id=None,  # Tracr's BOS is an input token of its own vocabulary, not GPT-2's
        eos_token_id=None,
    )
    hf = GPT2LMHeadModel(config).float().eval()

    def pad_rows(a: np.ndarray) -> Tensor:  # [d ...] -> [width ...]
        out = np.zeros((width, *a.shape[1:]), np.float32)
        out[:d] = a
        return torch.from_numpy(out)

    def heads(a: np.ndarray) -> np.ndarray:  # [.. heads*ks] -> [.. heads*d_head]
        a = a.reshape(*a.shape[:-1], n_heads, ks)
        out = np.zeros((*a.shape[:-1], d_head), np.float32)
        out[..., :ks] = a
        return out.reshape(*a.shape[:-2], width)

    scale = math.sqrt(d_head / ks)  # GPT-2 divides by sqrt(d_head), Tracr by sqrt(key_size)
    with torch.no_grad():
        t = hf.transformer
        t.wte.weight.zero_()
        t.wte.weight[: tok.shape[0]] = pad_rows(tok.T).T
        t.wpe.weight.copy_(pad_rows(pos.T).T)
        hf.lm_head.weight.zero_()
        hf.lm_head.weight[: unembed.shape[1]] = pad_rows(unembed).T
        for layer, block in enumerate(t.h):
            qkv_w, qkv_b = [], []
            for part, s in (("query", scale), ("key", 1.0), ("value", 1.0)):
                weight, bias = _layer(w, layer, f"attn/{part}")
                qkv_w.append(pad_rows(heads(weight * s)))
                qkv_b.append(torch.from_numpy(heads(bias * s)))
            block.attn.c_attn.weight.copy_(torch.cat(qkv_w, 1))
            block.attn.c_attn.bias.copy_(torch.cat(qkv_b))
            weight, bias = _layer(w, layer, "attn/linear")
            block.attn.c_proj.weight.copy_(pad_rows(heads(weight.T)).T)
            block.attn.c_proj.bias.copy_(pad_rows(bias))
            weight, bias = _layer(w, layer, "mlp/linear_1")
            block.mlp.c_fc.weight.copy_(pad_rows(weight))
            block.mlp.c_fc.bias.copy_(torch.from_numpy(bias))
            weight, bias = _layer(w, layer, "mlp/linear_2")
            block.mlp.c_proj.weight.copy_(pad_rows(weight.T).T)
            block.mlp.c_proj.bias.copy_(pad_rows(bias))
            block.ln_1, block.ln_2 = nn.Identity(), nn.Identity()
        t.ln_f = nn.Identity()
    return hf
