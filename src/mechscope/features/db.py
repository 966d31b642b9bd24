"""The feature database as Python objects: :func:`open_db` and :class:`FeatureDB`.

This API is the contract with the autointerp writers and the web UI (docs/features.md): reading
sources, features and examples; writing explanations and scores (a failed call is stored as an
error row, never as a score); an embedding per explanation for semantic search. The schema is in
:mod:`.schema`; which backend holds it is hidden in :mod:`.backends`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from mechscope.errors import MechscopeError
from mechscope.features.backends import Backend, open_backend
from mechscope.features.schema import FORMAT, SCHEMA_VERSION, ddl

__all__ = [
    "EXAMPLE_KINDS",
    "Example",
    "FeatureDB",
    "FeatureNotFound",
    "create_db",
    "floats_blob",
    "ints_blob",
    "open_db",
]

EXAMPLE_KINDS = ("top", "quantile", "negative")


class FeatureNotFound(MechscopeError):
    """An unknown source or a feature index out of range (the web API answers 404)."""


def floats_blob(values: Any) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def ints_blob(values: Any) -> bytes:
    return np.asarray(values, dtype="<i4").tobytes()


@dataclass(frozen=True)
class Example:
    """One stored window of a feature."""

    token_ids: list[int]
    tokens: list[str]  # each token decoded on its own
    values: list[float]  # the feature's activation at every token
    value: float  # the window's maximum (first position left out unless the build included it)
    position: int  # where that maximum is
    window: int  # the window's number in the build's corpus stream
    lo: float | None = None  # a quantile example's interval [lo, hi) of window maxima
    hi: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.lo is None:
            del out["lo"], out["hi"]
        return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class FeatureDB:
    """A feature database (SQLite file or PostgreSQL); see docs/features.md for the schema."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._vocab: dict[int, str] | None = None
        self._sources: dict[str, dict[str, Any]] | None = None

    def __enter__(self) -> FeatureDB:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    # reading -------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return dict(self.backend.query("SELECT key, value FROM meta"))

    def sources(self) -> list[dict[str, Any]]:
        """``[{"source", "kind", "hook_name", "n_features"}]`` in name order."""
        if self._sources is None or not self.backend.readonly:
            rows = self.backend.query(
                "SELECT source, kind, hook_name, n_features, config FROM sources ORDER BY source"
            )
            self._sources = {
                r[0]: {"source": r[0], "kind": r[1], "hook_name": r[2], "n_features": r[3],
                       "config": json.loads(r[4])}
                for r in rows
            }  # fmt: skip
        return [{k: v for k, v in s.items() if k != "config"} for s in self._sources.values()]

    def source(self, source: str) -> dict[str, Any]:
        """One source's row, with its ``config`` (how it was built)."""
        self.sources()
        assert self._sources is not None
        if source not in self._sources:
            known = ", ".join(self._sources) or "none"
            raise FeatureNotFound(f"no source {source!r} in the database; sources: {known}")
        return self._sources[source]

    def _check(self, source: str, index: int) -> None:
        n = self.source(source)["n_features"]
        if not 0 <= int(index) < n:
            raise FeatureNotFound(f"feature {index} is out of range: {source} has 0-{n - 1}")
        found = self.backend.query(
            "SELECT 1 FROM features WHERE source = ? AND idx = ?", [source, int(index)]
        )
        if not found:
            raise FeatureNotFound(f"feature {source}/{index} is not in the database (yet)")

    def vocab(self) -> dict[int, str]:
        if self._vocab is None:
            self._vocab = dict(self.backend.query("SELECT id, token FROM vocab"))
        return self._vocab

    def tokens(self, ids: Sequence[int]) -> list[str]:
        vocab = self.vocab()
        return [vocab.get(int(i), f"<{int(i)}>") for i in ids]

    def examples(self, source: str, index: int, kind: str = "top") -> list[Example]:
        """The stored windows of one kind (``top`` best first, ``quantile`` by interval, lowest
        first, ``negative``)."""
        if kind not in EXAMPLE_KINDS:
            raise MechscopeError(f"example kind must be one of {', '.join(EXAMPLE_KINDS)}")
        self._check(source, index)
        rows = self.backend.query(
            "SELECT value, position, win, lo, hi, token_ids, acts FROM examples "
            "WHERE source = ? AND idx = ? AND kind = ? ORDER BY slot",
            [source, int(index), kind],
        )
        out = []
        for value, position, win, lo, hi, ids_blob, acts_blob in rows:
            ids = np.frombuffer(ids_blob, dtype="<i4").tolist()
            values = np.frombuffer(acts_blob, dtype="<f4").tolist()
            out.append(Example(ids, self.tokens(ids), values, value, position, win, lo, hi))
        return out

    def stats(self, source: str) -> list[dict[str, Any]]:
        """Every feature's ``index, max, min, mean, std, density`` (for a source overview)."""
        self.source(source)
        rows = self.backend.query(
            "SELECT idx, maximum, minimum, mean, std, density FROM features WHERE source = ? "
            "ORDER BY idx",
            [source],
        )
        keys = ("index", "max", "min", "mean", "std", "density")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def score_values(self, source: str) -> list[dict[str, Any]]:
        """Every stored score of the source's explanations that is a number: ``explainer,
        scorer, value, control`` (``control`` ``None`` without one), for the score histograms."""
        self.source(source)
        rows = self.backend.query(
            "SELECT e.explainer, s.scorer, s.value, s.control FROM scores s "
            "JOIN explanations e ON e.id = s.explanation_id "
            "WHERE e.source = ? AND s.status = 'ok' AND e.status = 'ok' ORDER BY s.scorer, e.idx",
            [source],
        )
        keys = ("explainer", "scorer", "value", "control")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def feature(self, source: str, index: int) -> dict[str, Any]:
        """Everything about one feature: the JSON of ``GET /api/features/{source}/{index}``."""
        self._check(source, index)
        row = self.backend.query(
            "SELECT maximum, minimum, mean, std, density, histogram, logits, neighbours "
            "FROM features WHERE source = ? AND idx = ?",
            [source, int(index)],
        )[0]
        return {
            "source": source,
            "index": int(index),
            "max": row[0],
            "min": row[1],
            "mean": row[2],
            "std": row[3],
            "density": row[4],
            "examples": [e.to_dict() for e in self.examples(source, index, "top")],
            "quantile_examples": [e.to_dict() for e in self.examples(source, index, "quantile")],
            "negative_examples": [e.to_dict() for e in self.examples(source, index, "negative")],
            "histogram": json.loads(row[5]),
            "logits": json.loads(row[6]),
            "neighbours": json.loads(row[7]),
            "explanations": self.explanations(source, index),
        }

    def explanations(self, source: str, index: int) -> list[dict[str, Any]]:
        """``[{"id", "explainer", "text", "status", "error", "created", "scores": [...]}]``, oldest
        first; each score ``{"id", "scorer", "status", "value", "control", "error", "details",
        "created"}``."""
        self.source(source)
        rows = self.backend.query(
            "SELECT id, explainer, text, status, error, created FROM explanations "
            "WHERE source = ? AND idx = ? ORDER BY id",
            [source, int(index)],
        )
        keys = ("id", "explainer", "text", "status", "error", "created")
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        for e in out:
            e["scores"] = self.scores(e["id"])
        return out

    def scores(self, explanation_id: int) -> list[dict[str, Any]]:
        rows = self.backend.query(
            "SELECT id, scorer, status, value, control, error, details, created FROM scores "
            "WHERE explanation_id = ? ORDER BY id",
            [int(explanation_id)],
        )
        keys = ("id", "scorer", "status", "value", "control", "error", "details", "created")
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        for s in out:
            s["details"] = None if s["details"] is None else json.loads(s["details"])
        return out

    def explanation(self, explanation_id: int) -> dict[str, Any]:
        rows = self.backend.query(
            "SELECT id, source, idx, explainer, text, status, error, created FROM explanations "
            "WHERE id = ?",
            [int(explanation_id)],
        )
        if not rows:
            raise FeatureNotFound(f"no explanation {explanation_id} in the database")
        keys = ("id", "source", "index", "explainer", "text", "status", "error", "created")
        return dict(zip(keys, rows[0], strict=True))

    def embeddings(self, model: str) -> tuple[list[int], np.ndarray]:
        """Ids and vectors [n dim] of the explanations embedded with ``model``."""
        rows = self.backend.query(
            "SELECT id, embedding FROM explanations WHERE embedding_model = ? AND status = 'ok' "
            "ORDER BY id",
            [model],
        )
        if not rows:
            return [], np.zeros((0, 0), dtype=np.float32)
        return [r[0] for r in rows], np.stack([np.frombuffer(r[1], dtype="<f4") for r in rows])

    # writing (autointerp) ------------------------------------------------------------------

    def _writable(self) -> None:
        if self.backend.readonly:
            raise MechscopeError(f"{self.backend.where} is open read-only; open it writable")

    def add_explanation(
        self, source: str, index: int, explainer: str, text: str, *, error: str | None = None
    ) -> int:
        """Store an explanation of a feature and give its id; with ``error`` (a failed call)
        the row has status ``error`` and ``text`` may be empty."""
        self._writable()
        self._check(source, index)
        return self.backend.insert_id(
            "INSERT INTO explanations (source, idx, explainer, text, status, error, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [source, int(index), explainer, text, "error" if error else "ok", error, _now()],
        )

    def add_score(
        self,
        explanation_id: int,
        scorer: str,
        value: float | None,
        control: float | None = None,
        details: Any = None,
        *,
        error: str | None = None,
    ) -> int:
        """Store a score of an explanation; a failed scoring call passes ``value=None`` and
        ``error`` (stored with status ``error``, never as a number). ``details`` is JSON-able."""
        self._writable()
        self.explanation(explanation_id)
        if (value is None) == (error is None):
            raise MechscopeError("give a score either a value or an error, not both or neither")
        return self.backend.insert_id(
            "INSERT INTO scores (explanation_id, scorer, status, value, control, error, details, "
            "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [
                int(explanation_id), scorer, "error" if error else "ok",
                None if value is None else float(value),
                None if control is None else float(control), error,
                None if details is None else json.dumps(details), _now(),
            ],
        )  # fmt: skip

    def set_embedding(self, explanation_id: int, vector: Any, model: str) -> None:
        """Store an explanation's embedding (float32) and the model that made it."""
        self._writable()
        self.explanation(explanation_id)
        self.backend.execute(
            "UPDATE explanations SET embedding = ?, embedding_model = ? WHERE id = ?",
            [floats_blob(vector), model, int(explanation_id)],
        )


def _check_format(backend: Backend) -> None:
    where = backend.where
    bad = f"{where} is not a mechscope feature database"
    if not backend.has_table("meta"):
        raise MechscopeError(f"{bad}; pass one written by 'mechscope features build'")
    meta = dict(backend.query("SELECT key, value FROM meta"))
    if meta.get("format") != FORMAT:
        raise MechscopeError(f"{bad}; pass one written by 'mechscope features build'")
    version = int(meta.get("schema_version", "0"))
    if version != SCHEMA_VERSION:
        raise MechscopeError(
            f"{where} has feature schema {version}, this mechscope reads {SCHEMA_VERSION}; "
            "rebuild it with this version"
        )


def open_db(path_or_url: str, readonly: bool = False) -> FeatureDB:
    """An existing feature database: an SQLite file path or a ``postgresql://`` URL."""
    backend = open_backend(str(path_or_url), readonly=readonly)
    try:
        _check_format(backend)
    except BaseException:
        backend.close()
        raise
    return FeatureDB(backend)


def create_db(path_or_url: str) -> FeatureDB:
    """Open a feature database for building: create the schema when it is new, check the format
    when it exists."""
    backend = open_backend(str(path_or_url), readonly=False, create=True)
    try:
        if backend.has_table("meta"):
            _check_format(backend)
        elif _has_tables(backend):
            raise MechscopeError(
                f"{backend.where} holds other tables and is not a mechscope feature database; "
                "pass a new file or an empty database"
            )
        else:
            backend.script(ddl(backend.dialect))
            backend.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("format", FORMAT), ("schema_version", str(SCHEMA_VERSION))],
            )
    except BaseException:
        backend.close()
        raise
    return FeatureDB(backend)


def _has_tables(backend: Backend) -> bool:
    if backend.dialect == "sqlite":
        return bool(backend.query("SELECT 1 FROM sqlite_master WHERE type = 'table'"))
    sql = "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema()"
    return bool(backend.query(sql))


def sqlite_rows(path: Any) -> dict[str, list]:
    """Every row of every table of a SQLite database file, sorted within each table (a
    comparable snapshot: two builds are the same database when their snapshots are equal)."""
    import sqlite3

    con = sqlite3.connect(path)
    try:
        names = [t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in names}
    finally:
        con.close()
