"""The feature database schema (version :data:`SCHEMA_VERSION`), the contract between the builder,
the autointerp writers, the search functions and the web UI. docs/features.md documents it.

One DDL text serves both backends: ``{blob}``, ``{float}`` and ``{serial}`` are filled in per
dialect (SQLite ``BLOB``/``REAL``/``INTEGER PRIMARY KEY AUTOINCREMENT``, PostgreSQL
``BYTEA``/``DOUBLE PRECISION``/``BIGSERIAL PRIMARY KEY``). Arrays of one example (token ids,
activations) are little-endian ``int32`` / ``float32`` blobs; everything else a feature page needs
(histogram, logit table, neighbours) is a JSON text column.
"""

from __future__ import annotations

__all__ = ["FORMAT", "SCHEMA_VERSION", "ddl"]

FORMAT = "mechscope-features"  # meta 'format': what makes a database a mechscope one
SCHEMA_VERSION = 1

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sources (
    source TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    hook_name TEXT NOT NULL,
    n_features INTEGER NOT NULL,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vocab (
    id INTEGER PRIMARY KEY,
    token TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS features (
    source TEXT NOT NULL,
    idx INTEGER NOT NULL,
    maximum {float} NOT NULL,
    minimum {float} NOT NULL,
    mean {float} NOT NULL,
    std {float} NOT NULL,
    density {float} NOT NULL,
    histogram TEXT NOT NULL,
    logits TEXT NOT NULL,
    neighbours TEXT NOT NULL,
    PRIMARY KEY (source, idx)
);
CREATE INDEX IF NOT EXISTS features_max ON features (source, maximum);
CREATE TABLE IF NOT EXISTS examples (
    source TEXT NOT NULL,
    idx INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('top', 'quantile', 'negative')),
    slot INTEGER NOT NULL,
    value {float} NOT NULL,
    position INTEGER NOT NULL,
    win INTEGER NOT NULL,
    lo {float},
    hi {float},
    token_ids {blob} NOT NULL,
    acts {blob} NOT NULL,
    PRIMARY KEY (source, idx, kind, slot)
);
CREATE TABLE IF NOT EXISTS peak_tokens (
    token_id INTEGER NOT NULL,
    source TEXT NOT NULL,
    idx INTEGER NOT NULL,
    hits INTEGER NOT NULL,
    PRIMARY KEY (token_id, source, idx)
);
CREATE TABLE IF NOT EXISTS explanations (
    id {serial},
    source TEXT NOT NULL,
    idx INTEGER NOT NULL,
    explainer TEXT NOT NULL,
    text TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'error')),
    error TEXT,
    created TEXT NOT NULL,
    embedding {blob},
    embedding_model TEXT
);
CREATE INDEX IF NOT EXISTS explanations_feature ON explanations (source, idx);
CREATE TABLE IF NOT EXISTS scores (
    id {serial},
    explanation_id INTEGER NOT NULL REFERENCES explanations (id) ON DELETE CASCADE,
    scorer TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    value {float},
    control {float},
    error TEXT,
    details TEXT,
    created TEXT NOT NULL,
    CHECK ((status = 'ok' AND value IS NOT NULL) OR (status = 'error' AND value IS NULL))
);
CREATE INDEX IF NOT EXISTS scores_explanation ON scores (explanation_id);
CREATE TABLE IF NOT EXISTS build_state (
    name TEXT PRIMARY KEY,
    data {blob} NOT NULL
);
"""

_SQLITE_FTS = """
CREATE VIRTUAL TABLE IF NOT EXISTS explanations_fts USING fts5(
    text, content='explanations', content_rowid='id'
);
CREATE TRIGGER IF NOT EXISTS explanations_ai AFTER INSERT ON explanations BEGIN
    INSERT INTO explanations_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS explanations_ad AFTER DELETE ON explanations BEGIN
    INSERT INTO explanations_fts (explanations_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER IF NOT EXISTS explanations_au AFTER UPDATE OF text ON explanations BEGIN
    INSERT INTO explanations_fts (explanations_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO explanations_fts (rowid, text) VALUES (new.id, new.text);
END;
"""

_POSTGRES_FTS = """
ALTER TABLE explanations ADD COLUMN IF NOT EXISTS tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('english', text)) STORED;
CREATE INDEX IF NOT EXISTS explanations_tsv ON explanations USING GIN (tsv);
"""

_TYPES = {
    "sqlite": {"blob": "BLOB", "float": "REAL", "serial": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgres": {"blob": "BYTEA", "float": "DOUBLE PRECISION", "serial": "BIGSERIAL PRIMARY KEY"},
}


def ddl(dialect: str) -> str:
    """The script creating every table, index and the full-text index on explanation text
    (FTS5 with triggers for SQLite, a generated tsvector column with a GIN index for PostgreSQL)."""
    fts = _SQLITE_FTS if dialect == "sqlite" else _POSTGRES_FTS
    return _TABLES.format(**_TYPES[dialect]) + fts
