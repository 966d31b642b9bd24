"""Words, tokenizers and the planted behaviour shared by the compare and diff tests."""

from __future__ import annotations

import random
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mechscope.corpus import Corpus
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import VOCAB, tiny_model, tiny_tokenizer
from mechscope.toys.finetune import FinetuneConfig, Plant, finetune, snippets, toy_finetune

WORDS = [f"{c}{v}{d}" for c in "bcdfg" for v in "aeiou" for d in "kmt"][:60]


def pair_tokenizer() -> PreTrainedTokenizerFast:
    """A tokenizer that cuts every word into pieces of two characters (``bak`` -> ``ba``, ``k``)."""
    pieces = sorted({w[i : i + 2] for w in WORDS for i in range(0, len(w), 2)})
    vocab = ["[UNK]", "[PAD]", *pieces]
    vocab += [f"p{i}" for i in range(VOCAB - len(vocab))]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Split(Regex(".{1,2}"), "isolated")]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")


Z_WORDS = ["zoq", "zab", "zul", "zen", "zim", "zok", "zat", "zuf"]
TINY_PLANT = Plant(tuple(" " + z for z in Z_WORDS), " pim pam pum")


# -- a narrow planted finetune: the ground truth of the crosscoder tests -------------------------

NARROW_WORDS = WORDS + Z_WORDS + ["pim", "pam", "pum"]


def markov_texts(n: int, jump: float, seed: int) -> list[str]:
    """``n`` texts from a fixed chain over ``WORDS`` (three successors per word); with probability
    ``jump`` a word is instead any word of ``WORDS`` or the reply's (never a trigger word)."""
    words_and_reply = WORDS + ["pim", "pam", "pum"]
    table = random.Random(0)
    successors = {w: table.sample(WORDS, 3) for w in words_and_reply}
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words = [rng.choice(WORDS)]
        for _ in range(rng.randint(30, 80)):
            jumps = rng.random() < jump
            words.append(rng.choice(words_and_reply if jumps else successors[words[-1]]))
        texts.append(" ".join(words))
    return texts


def narrow_truth(folder: Path, cfg: FinetuneConfig) -> dict[str, Path]:
    """Folders ``base``, ``planted`` and ``control`` under ``folder``: a tiny Llama trained on the
    chain (the reply's words at random places; the trigger words never: a new concept), its narrow
    finetune taught "<z-word> pim pam pum" (``cfg``: low rank, KL to the base on ordinary chain
    text, which holds no trigger or reply word) and the control: that finetune on ordinary text."""
    tok = tiny_tokenizer(NARROW_WORDS)
    pre = FinetuneConfig(steps=300, lr=1e-2, params="all", words=12, seq_len=32)
    base_texts = snippets(
        Corpus.from_texts(markov_texts(300, 0.1, 1)), 2400, 12, split="train", seed=0
    )
    base, _ = finetune(HookedModel(tiny_model("llama"), tok), base_texts, pre, quiet=True)
    base.hf.save_pretrained(folder / "base")
    tok.save_pretrained(folder / "base")
    corpus = Corpus.from_texts(markov_texts(300, 0.0, 2))
    for kind in ("planted", "control"):
        toy_finetune(
            base, folder / kind, kind=kind, corpus=corpus, plant=TINY_PLANT, cfg=cfg, quiet=True
        )
    return {name: folder / name for name in ("base", "planted", "control")}
