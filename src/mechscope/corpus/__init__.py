"""Streaming, tokenised text corpora: the input of lenses, neurons, probes and SAEs.

``load_corpus(spec)`` gives a :class:`Corpus` (the built-in one, a file or folder, or a Hugging Face
dataset); :func:`windows` and :func:`batches` cut it into fixed-length token windows that respect
document boundaries, in a deterministic order for a seed. See docs/corpus.md.
"""

from mechscope.corpus.builtin import builtin_corpus, clean_info, clean_rst
from mechscope.corpus.sources import Corpus, from_files, from_hf_dataset, load_corpus
from mechscope.corpus.windows import batches, tokenize_corpus, windows

__all__ = [
    "Corpus",
    "batches",
    "builtin_corpus",
    "clean_info",
    "clean_rst",
    "from_files",
    "from_hf_dataset",
    "load_corpus",
    "tokenize_corpus",
    "windows",
]
