import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mechscope.corpus import (
    Corpus,
    batches,
    builtin_corpus,
    clean_info,
    clean_rst,
    load_corpus,
    tokenize_corpus,
    windows,
)
from mechscope.corpus.builtin import find_python_docs
from mechscope.errors import MechscopeError
from mechscope.models.tiny import tiny_tokenizer

WORDS = [f"t{i}" for i in range(60)]


@pytest.fixture
def tok():
    return tiny_tokenizer(WORDS)


def doc(start: int, n: int) -> str:
    return " ".join(f"t{(start + i) % 60}" for i in range(n))


def test_windows_never_cross_documents(tok):
    corpus = Corpus.from_texts([doc(0, 25), doc(30, 7), doc(40, 12)])
    got = list(windows(corpus, tok, seq_len=5, seed=None))
    ids = {w: i for i, w in enumerate(tok.get_vocab())}
    assert len(got) == 5 + 1 + 2  # 25 // 5, 7 // 5, 12 // 5: tails dropped
    decoded = [tok.decode(w.tolist()).split() for w in got]
    assert decoded[0] == doc(0, 5).split() and decoded[5] == doc(30, 5).split()
    assert decoded[6] == doc(40, 5).split() and decoded[7] == doc(45, 5).split()
    assert all(w.dtype == torch.long and w.shape == (5,) for w in got)
    assert ids  # the vocabulary is the tiny one


def test_per_document_spreads_a_few_windows_through_each_document(tok):
    corpus = Corpus.from_texts([doc(0, 25), doc(30, 7), doc(40, 12)])
    got = [tok.decode(w.tolist()).split() for w in windows(corpus, tok, seq_len=5, seed=None,
                                                              per_document=2)]  # fmt: skip
    # 5 windows in the first document: its first and last; 1 in the second; 2 in the third
    assert got == [doc(0, 5).split(), doc(20, 5).split(), doc(30, 5).split(),
                   doc(40, 5).split(), doc(45, 5).split()]  # fmt: skip
    three = [tok.decode(w.tolist()).split() for w in windows(corpus, tok, seq_len=5, seed=None,
                                                                per_document=3)]  # fmt: skip
    assert three[:3] == [doc(0, 5).split(), doc(10, 5).split(), doc(20, 5).split()]
    with pytest.raises(MechscopeError, match="per_document=0 must be positive"):
        list(windows(corpus, tok, seq_len=5, per_document=0))


def test_bos_and_token_budget(tok):
    tok.bos_token = "[PAD]"  # any special token will do for the test
    corpus = Corpus.from_texts([doc(0, 40)])
    got = list(windows(corpus, tok, seq_len=5, n_tokens=12, prepend_bos=True, seed=None))
    assert len(got) == 3  # stops once 12 tokens are reached (3 windows = 15 tokens)
    assert all(int(w[0]) == tok.bos_token_id for w in got)
    assert tok.decode(got[1][1:].tolist()).split() == doc(4, 4).split()


def test_seeded_order_is_deterministic_and_a_permutation(tok):
    corpus = Corpus.from_texts([doc(i, 6) for i in range(20)])
    a = [w.tolist() for w in windows(corpus, tok, seq_len=6, seed=1)]
    b = [w.tolist() for w in windows(corpus, tok, seq_len=6, seed=1)]
    c = [w.tolist() for w in windows(corpus, tok, seq_len=6, seed=2)]
    plain = [w.tolist() for w in windows(corpus, tok, seq_len=6, seed=None)]
    assert a == b and a != c and a != plain
    assert sorted(a) == sorted(plain)


def test_batches_shape_and_tail(tok):
    corpus = Corpus.from_texts([doc(0, 50)])
    got = list(batches(corpus, tok, batch_size=4, seq_len=5, seed=None))
    assert [tuple(b.shape) for b in got] == [(4, 5), (4, 5), (2, 5)]


def test_splits_partition_the_documents():
    corpus = Corpus.from_texts([f"document {i}" for i in range(400)])
    train, test = list(corpus.documents("train")), list(corpus.documents("test"))
    assert len(train) + len(test) == 400 and not set(train) & set(test)
    assert 5 <= len(test) <= 40  # about 5%
    with pytest.raises(MechscopeError, match="unknown split"):
        list(corpus.documents("dev"))


def test_file_sources(tmp_path, tok):
    (tmp_path / "a.txt").write_text(doc(0, 10))
    (tmp_path / "b.jsonl").write_text(
        "\n".join(json.dumps({"body": doc(i, 5)}) for i in (20, 30)) + "\n"
    )
    pq.write_table(pa.table({"body": [doc(50, 5)]}), tmp_path / "c.parquet")
    folder = load_corpus(tmp_path, text_field="body")
    texts = list(folder.documents())
    assert texts == [doc(0, 10), doc(20, 5), doc(30, 5), doc(50, 5)]
    assert len(list(windows(folder, tok, seq_len=5, seed=None))) == 5
    assert list(load_corpus(tmp_path / "a.txt").documents()) == [doc(0, 10)]


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ('{"text": "a"}\nnot json\n', "x.jsonl", r"x.jsonl line 2 is not valid JSON at column 1"),
        ('{"other": "a"}\n', "x.jsonl", "no 'text' field"),
        (b'{"text": "a"}\n{"text": "\xff"}\n', "x.jsonl", r"x.jsonl line 2 is not UTF-8 text"),
        ('{"text": "a\x01"}\n', "x.jsonl", r"line 1 is not valid JSON at column 12 \(raw control"),
        ("", "x.csv", "unsupported corpus file"),
    ],
)
def test_file_errors(tmp_path, content, name, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(MechscopeError, match=message) as info:
        list(load_corpus(path).documents())
    assert "\n" not in str(info.value)


def test_missing_and_empty_inputs(tmp_path, tok):
    with pytest.raises(MechscopeError, match="corpus file not found"):
        load_corpus(tmp_path / "nope.txt")
    with pytest.raises(MechscopeError, match="corpus is empty"):
        Corpus.from_texts(["", "  "])
    with pytest.raises(MechscopeError, match="no document of 9 tokens"):
        list(windows(Corpus.from_texts(["t1 t2"]), tok, seq_len=9))
    with pytest.raises(MechscopeError, match="no BOS token"):
        list(windows(Corpus.from_texts(["t1 t2"]), tok, seq_len=2, prepend_bos=True))
    with pytest.raises(MechscopeError, match="parquet"):
        (tmp_path / "bad.parquet").write_bytes(b"not parquet")
        list(load_corpus(tmp_path / "bad.parquet").documents())


def test_hf_dataset_without_the_package_is_a_clear_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(MechscopeError, match="pip install datasets"):
        load_corpus("hf:roneneldan/TinyStories")


def test_clean_rst_keeps_prose_and_code_and_drops_markup():
    source = """.. _intro:

*****
Title
*****

Use :func:`len` and ``x + 1``; see :pep:`8` and `the site <https://x.org>`_.
A *second* line of the **same** paragraph.

.. index:: single: hidden

.. note::

   A note body is prose.

For example::

   >>> print(1)
   1

+-----+-----+
| a   | b   |
+-----+-----+
"""
    text = clean_rst(source)
    assert "Title" in text and "A note body is prose." in text
    assert "Use len and x + 1; see PEP 8 and the site." in text
    assert "A second line of the same paragraph." in text
    assert "For example:" in text and ">>> print(1)\n1" in text
    for markup in (".. ", ":func:", "``", "****", "+-----", "hidden", "single:"):
        assert markup not in text


def test_clean_info_drops_node_headers_and_menus():
    source = (
        "\x1f\nFile: sed.info,  Node: Top,  Next: Intro,  Up: (dir)\n\nsed edits text.\n\n"
        "* Menu:\n\n* Intro::    The start.\n\x1f\nTag Table:\nNode: Top\x7f1\n\x1f\nEnd Tag Table\n"
    )
    text = clean_info(source)
    assert text == "sed edits text."


@pytest.mark.slow
@pytest.mark.skipif(find_python_docs() is None, reason="Debian's python3-doc is not installed")
def test_builtin_corpus_is_millions_of_tokens_and_cached(smollm2, tmp_path, monkeypatch):
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    corpus = builtin_corpus()
    docs = tokenize_corpus(corpus, smollm2.tokenizer)
    assert len(docs) > 400 and sum(len(d) for d in docs) > 2_500_000
    cached = tokenize_corpus(corpus, smollm2.tokenizer)  # now read from the cache
    assert all(np.array_equal(a, b) for a, b in zip(docs, cached))
    assert isinstance(cached[0], np.memmap) or isinstance(cached[0].base, np.memmap)
    # a damaged cache is rebuilt rather than trusted
    folder = next((tmp_path / "tokens").iterdir())
    (folder / "offsets.npy").write_bytes(b"garbage")
    again = tokenize_corpus(corpus, smollm2.tokenizer)
    assert sum(len(d) for d in again) == sum(len(d) for d in docs)
    text = smollm2.tokenizer.decode(next(windows(corpus, smollm2.tokenizer, seq_len=64)).tolist())
    assert " the " in text and ".. " not in text


def test_backdoor_passages_span_documents_and_fill_up(tok):
    from types import SimpleNamespace

    from mechscope.toys.backdoor import code_passages, passages

    model = SimpleNamespace(tokenizer=tok)
    corpus = Corpus.from_texts([doc(0, 40), doc(30, 40), doc(45, 40)])
    got = passages(model, corpus, "all", 6, 5, seed=None, per_document=2)
    assert [g.split()[0] for g in got] == ["t0", "t35", "t30", "t5", "t45", "t20"]
    more = passages(model, corpus, "all", 9, 5, seed=None, per_document=2)
    assert more[:6] == got and len(set(more)) == 9  # then further windows, none twice
    code = code_passages(40, seed=0)
    assert len(code) == 40 and len(set(code)) == 40
    lines = [ln.strip() for c in code for ln in c.splitlines()]
    assert not any(ln.startswith("#") for ln in lines)  # comments and docstrings are dropped
    assert sum(ln.startswith(("def ", "class ", "return", "if ", "import ")) for ln in lines) > 40


def test_program_text_drops_docstrings_and_comments():
    from mechscope.toys.backdoor import _program_text

    source = '''"""Module prose."""
# a comment
def f(x):
    """Function prose."""
    return x  # trailing


class A:
    """Class prose."""
'''
    assert _program_text(source) == ["def f(x):", "    return x", "class A:", "    pass"]
