"""Tiny random-initialised models, one per supported family, built in code from HF configs.

They need no download and run in milliseconds: the parity and property tests use them, and so can
users writing their own tests. ``tiny_model("llama")`` returns an HF model in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM as _Auto
from transformers import (
    BloomConfig,
    FalconConfig,
    Gemma2Config,
    Gemma3TextConfig,
    GemmaConfig,
    GPT2Config,
    GPTJConfig,
    GPTNeoXConfig,
    GptOssConfig,
    GraniteConfig,
    LlamaConfig,
    MistralConfig,
    MixtralConfig,
    MptConfig,
    Olmo2Config,
    OlmoeConfig,
    OPTConfig,
    PersimmonConfig,
    Phi3Config,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2MoeConfig,
    Starcoder2Config,
)

VOCAB = 101
COMMON = {"vocab_size": VOCAB, "max_position_embeddings": 64}
LLAMA_LIKE = {
    "hidden_size": 48,
    "intermediate_size": 80,
    "num_hidden_layers": 3,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "head_dim": 8,
    **COMMON,
}

IDS = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
# Gemma 2/3: small caps and a 4-token window so that soft-capping and sliding windows matter.
GEMMA2_LIKE = {
    **LLAMA_LIKE,
    "query_pre_attn_scalar": 8,
    "sliding_window": 4,
    "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
}
FALCON_LIKE = {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 6, **COMMON}

CONFIGS: dict[str, Callable[[], Any]] = {
    "gpt2": lambda: GPT2Config(
        n_embd=48,
        n_layer=3,
        n_head=4,
        n_positions=64,
        vocab_size=VOCAB,
        bos_token_id=0,
        eos_token_id=0,
    ),
    "llama": lambda: LlamaConfig(**LLAMA_LIKE),
    "mistral": lambda: MistralConfig(**LLAMA_LIKE, sliding_window=None),
    "qwen2": lambda: Qwen2Config(**LLAMA_LIKE),
    "gpt_neox": lambda: GPTNeoXConfig(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        rotary_pct=0.25,
        use_parallel_residual=True,
        bos_token_id=0,
        eos_token_id=0,
        **COMMON,
    ),
    "gpt_neox_sequential": lambda: GPTNeoXConfig(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        use_parallel_residual=False,
        bos_token_id=0,
        eos_token_id=0,
        **COMMON,
    ),
    "mixtral": lambda: MixtralConfig(
        **{**LLAMA_LIKE, "num_hidden_layers": 2},
        num_local_experts=4,
        num_experts_per_tok=2,
    ),
    "gemma": lambda: GemmaConfig(**LLAMA_LIKE),
    "gemma2": lambda: Gemma2Config(
        **GEMMA2_LIKE, attn_logit_softcapping=2.0, final_logit_softcapping=3.0
    ),
    "gemma3_text": lambda: Gemma3TextConfig(**GEMMA2_LIKE),
    "phi3": lambda: Phi3Config(**LLAMA_LIKE, **IDS),
    "olmo2": lambda: Olmo2Config(**LLAMA_LIKE, **IDS),
    "gptj": lambda: GPTJConfig(
        n_embd=48, n_layer=3, n_head=4, n_positions=64, rotary_dim=6, vocab_size=VOCAB, **IDS
    ),
    "opt": lambda: OPTConfig(
        hidden_size=48,
        ffn_dim=80,
        num_hidden_layers=3,
        num_attention_heads=4,
        word_embed_proj_dim=48,
        pad_token_id=1,
        **COMMON,
    ),
    "falcon": lambda: FalconConfig(**FALCON_LIKE, ffn_hidden_size=96),  # 7B: multi-query, parallel
    "falcon_grouped": lambda: FalconConfig(
        **FALCON_LIKE, new_decoder_architecture=True, num_kv_heads=2, ffn_hidden_size=96
    ),
    "falcon_sequential": lambda: FalconConfig(
        **FALCON_LIKE, multi_query=False, parallel_attn=False, ffn_hidden_size=96
    ),
    "starcoder2": lambda: Starcoder2Config(**LLAMA_LIKE, sliding_window=None),
    "granite": lambda: GraniteConfig(
        **LLAMA_LIKE,
        embedding_multiplier=3.0,
        residual_multiplier=0.5,
        attention_multiplier=0.2,
        logits_scaling=2.0,
    ),
    "gpt_oss": lambda: GptOssConfig(
        **{**LLAMA_LIKE, "num_hidden_layers": 2},
        num_local_experts=4,
        num_experts_per_tok=2,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ),
    "qwen2_moe": lambda: Qwen2MoeConfig(
        **{**LLAMA_LIKE, "num_hidden_layers": 2},
        moe_intermediate_size=40,
        shared_expert_intermediate_size=64,
        num_experts=4,
        num_experts_per_tok=2,
    ),
    "olmoe": lambda: OlmoeConfig(
        **{**LLAMA_LIKE, "num_hidden_layers": 2},
        num_experts=4,
        num_experts_per_tok=2,
        norm_topk_prob=True,  # real OLMoE leaves it False (as Qwen2-MoE above): test both rules
        **IDS,
    ),
}

# Decoder-only types with no family file: they load through the residual-only fallback.
FALLBACK_CONFIGS: dict[str, Callable[[], Any]] = {
    "bloom": lambda: BloomConfig(hidden_size=48, n_layer=3, n_head=4, vocab_size=VOCAB),
    "mpt": lambda: MptConfig(d_model=48, n_heads=4, n_layers=2, max_seq_len=64, vocab_size=VOCAB),
    "persimmon": lambda: PersimmonConfig(
        hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, **COMMON
    ),
}


def tiny_model(kind: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A random tiny model of one family (``CONFIGS``) or of a fallback type (``FALLBACK_CONFIGS``)."""
    torch.manual_seed(seed)
    config = {**CONFIGS, **FALLBACK_CONFIGS}[kind]()
    model = _Auto.from_config(config, dtype=dtype)
    # Random init leaves LayerNorm at (1, 0) and some biases at 0: perturb so every path matters.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def tiny_tokenizer(words: Iterable[str] = (), n_vocab: int = VOCAB) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with exactly ``n_vocab`` tokens: ``words`` first, then fillers.

    Text is split on whitespace and punctuation; unknown words map to ``[UNK]``.
    """
    vocab = ["[UNK]", "[PAD]", *sorted(set(words))]
    vocab += [f"w{i}" for i in range(n_vocab - len(vocab))]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
