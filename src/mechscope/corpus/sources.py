"""Where corpus text comes from: in-memory texts, text/JSONL/Parquet files, Hugging Face datasets.

A :class:`Corpus` is a name plus a function that yields documents (plain strings) in a fixed order.
Every source is streamed: no source reads more than one file (or one dataset shard) at a time.
``documents(split)`` assigns each document to ``train`` or ``test`` by a stable hash of its index, so
held-out text is the same on every machine and every run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mechscope.errors import MechscopeError
from mechscope.files import read_jsonl as jsonl_lines

__all__ = ["SPLITS", "TEST_FRACTION", "Corpus", "from_files", "from_hf_dataset", "load_corpus"]

SPLITS = ("all", "train", "test")
TEST_FRACTION = 0.05  # share of documents held out as the test split
FILE_KINDS = (".txt", ".md", ".rst", ".jsonl", ".parquet")


@dataclass(frozen=True)
class Corpus:
    """A named, ordered stream of documents.

    ``fingerprint`` identifies the content (used to cache tokenisations); ``None`` disables caching.
    ``licence`` and ``origin`` are provenance, shown in reports.
    """

    name: str
    _documents: Callable[[], Iterable[str]] = field(repr=False)
    fingerprint: str | None = None
    origin: str = ""
    licence: str = ""
    cache_tokens: bool = False  # tokenise once per tokenizer into ~/.cache/mechscope/tokens

    @classmethod
    def from_texts(cls, texts: Iterable[str], name: str = "texts") -> Corpus:
        """A corpus over in-memory strings (each string one document)."""
        texts = [t for t in texts if t and t.strip()]
        if not texts:
            raise MechscopeError("the corpus is empty; pass at least one non-empty text")
        digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]
        return cls(name, lambda: iter(texts), fingerprint=digest, origin="in memory")

    def documents(self, split: str = "all") -> Iterator[str]:
        """The documents of ``split`` (``all``, ``train`` or ``test``) in corpus order."""
        if split not in SPLITS:
            raise MechscopeError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        for index, doc in enumerate(self._documents()):
            if not doc or not doc.strip():
                continue
            if split == "all" or (split == "test") == is_test_document(index):
                yield doc


def is_test_document(index: int) -> bool:
    """Stable held-out assignment of the document at ``index`` (about 5% are test)."""
    digest = hashlib.blake2b(str(index).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") % 10_000 < TEST_FRACTION * 10_000


def _read_jsonl(path: Path, text_field: str) -> Iterator[str]:
    for number, row in jsonl_lines(path):
        if not isinstance(row, dict) or text_field not in row:
            raise MechscopeError(
                f"{path}:{number}: no {text_field!r} field; pass --text-field with the "
                "name of the field that holds the text"
            )
        yield str(row[text_field])


def _read_parquet(path: Path, text_field: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MechscopeError("reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise MechscopeError(f"{path}: not a readable Parquet file ({exc})") from None
    if text_field not in table.schema_arrow.names:
        raise MechscopeError(
            f"{path}: no column {text_field!r} (columns: {', '.join(table.schema_arrow.names)}); "
            "pass --text-field"
        )
    for batch in table.iter_batches(columns=[text_field], batch_size=1024):
        yield from (str(t) for t in batch.column(0).to_pylist() if t is not None)


def _read_file(path: Path, text_field: str) -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _read_jsonl(path, text_field)
    elif suffix == ".parquet":
        yield from _read_parquet(path, text_field)
    else:  # a plain text file is one document
        yield path.read_text(encoding="utf-8", errors="replace")


def from_files(path: str | Path, text_field: str = "text") -> Corpus:
    """A corpus over a .txt/.md/.rst/.jsonl/.parquet file, or a folder of them (sorted, recursive)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MechscopeError(f"corpus file not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in FILE_KINDS)
        if not files:
            raise MechscopeError(f"no {'/'.join(FILE_KINDS)} files in {path}")
    elif path.suffix.lower() in FILE_KINDS:
        files = [path]
    else:
        raise MechscopeError(
            f"unsupported corpus file {path.name}; use one of {', '.join(FILE_KINDS)}"
        )
    stamp = "|".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}:{text_field}" for p in files)

    def documents() -> Iterator[str]:
        for f in files:
            yield from _read_file(f, text_field)

    digest = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    return Corpus(path.name, documents, fingerprint=digest, origin=str(path))


def from_hf_dataset(
    name: str, config: str | None = None, split: str = "train", text_field: str = "text"
) -> Corpus:
    """A Hugging Face dataset by name, streamed (needs the ``datasets`` package and a network)."""
    try:
        import datasets
    except ImportError:
        raise MechscopeError(
            f"loading the dataset {name!r} needs the datasets package: pip install datasets"
        ) from None

    def documents() -> Iterator[str]:
        try:
            rows = datasets.load_dataset(name, config, split=split, streaming=True)
        except Exception as exc:  # noqa: BLE001 - network, auth and missing-dataset errors
            raise MechscopeError(
                f"cannot load dataset {name!r}: {str(exc).splitlines()[0]}"
            ) from None
        for row in rows:
            if text_field not in row:
                raise MechscopeError(
                    f"dataset {name!r} has no {text_field!r} field; pass --text-field"
                )
            yield str(row[text_field])

    return Corpus(name, documents, fingerprint=None, origin=f"huggingface.co/datasets/{name}")


def load_corpus(spec: str | Path | None = None, text_field: str = "text") -> Corpus:
    """A corpus from a spec: ``None``/``"builtin"``, a file or folder, or ``"hf:NAME[:CONFIG]"``."""
    from mechscope.corpus.builtin import builtin_corpus

    if spec is None or str(spec) in ("builtin", "python-docs"):
        return builtin_corpus()
    text = str(spec)
    if text.startswith("hf:"):
        name, _, config = text[3:].partition(":")
        return from_hf_dataset(name, config or None, text_field=text_field)
    return from_files(text, text_field=text_field)
