"""Words, tokenizers and the planted behaviour shared by the compare and diff tests."""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mechscope.models.tiny import VOCAB
from mechscope.toys.finetune import Plant

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
