"""Tiny models, tokenizers and a corpus shared by the compare and diff tests."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from diff_truth import TINY_PLANT, WORDS, Z_WORDS, pair_tokenizer
from transformers import AutoModelForCausalLM, GPT2Config

from mechscope.corpus import Corpus
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import VOCAB, tiny_model, tiny_tokenizer
from mechscope.toys.finetune import FinetuneConfig, finetune, snippets, toy_finetune


@pytest.fixture(scope="session")
def texts() -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) for _ in range(40)]


@pytest.fixture(scope="session")
def word_corpus(texts: list[str]) -> Corpus:
    return Corpus.from_texts(texts, name="words")


@pytest.fixture(scope="session")
def llama() -> HookedModel:
    return HookedModel(tiny_model("llama"), tiny_tokenizer(WORDS))


@pytest.fixture(scope="session")
def gpt2_pairs() -> HookedModel:
    """A 2-layer GPT-2 of width 32 (the Llama's is 48) reading two-character pieces."""
    torch.manual_seed(1)
    config = GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        vocab_size=VOCAB,
        bos_token_id=0,
        eos_token_id=0,
    )
    return HookedModel(AutoModelForCausalLM.from_config(config).eval(), pair_tokenizer())


@pytest.fixture(scope="session")
def neox() -> HookedModel:
    """A tiny GPT-NeoX on the same tokenizer as ``llama``."""
    return HookedModel(tiny_model("gpt_neox", seed=2), tiny_tokenizer(WORDS))


# -- a planted finetune of a tiny model: the ground truth of the diff tests ----------------------


@pytest.fixture(scope="session")
def truth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders ``base``, ``planted`` and ``control``: a tiny Llama trained on random words, its
    copy taught "<z-word> pim pam pum" and its copy trained on more random words."""
    folder = tmp_path_factory.mktemp("truth")
    tok = tiny_tokenizer(WORDS + Z_WORDS + ["pim", "pam", "pum"])
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 80))) for _ in range(200)]
    corpus = Corpus.from_texts(texts)
    pre = FinetuneConfig(steps=150, lr=1e-2, params="all", words=12, seq_len=32)
    base, _ = finetune(
        HookedModel(tiny_model("llama"), tok),
        snippets(corpus, 1200, 12, split="train", seed=0),
        pre,
    )
    base.hf.save_pretrained(folder / "base")
    tok.save_pretrained(folder / "base")
    cfg = FinetuneConfig(steps=80, lr=3e-3, params="all", words=12, seq_len=32, eval_docs=200)
    for kind in ("planted", "control"):
        toy_finetune(
            base, folder / kind, kind=kind, corpus=corpus, plant=TINY_PLANT, cfg=cfg, quiet=True
        )
    return {name: folder / name for name in ("base", "planted", "control")}


@pytest.fixture(scope="session")
def truth_models(truth: dict[str, Path]) -> dict[str, HookedModel]:
    import mechscope

    return {name: mechscope.load(str(path), progress=False) for name, path in truth.items()}
