"""Storage backends behind one small interface: an SQLite file (default) or PostgreSQL.

Both run the same SQL (written with ``?`` placeholders, turned into ``%s`` for psycopg) and the same
schema (:mod:`.schema`); only opening, the DDL types and full-text search differ. Nothing outside
this module knows which backend is in use. Every call holds one lock, so a connection can be
shared by the web server's worker threads; :meth:`Backend.transaction` holds it for the whole
transaction.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mechscope.errors import MechscopeError

__all__ = ["Backend", "PostgresBackend", "SQLiteBackend", "open_backend"]

_WORD = re.compile(r"\w+", re.UNICODE)


class Backend:
    """What :class:`~mechscope.features.db.FeatureDB` needs from a database."""

    dialect = ""

    def __init__(self, conn: Any, readonly: bool, where: str) -> None:
        self.conn = conn
        self.readonly = readonly
        self.where = where  # the path or URL, for messages
        self.lock = threading.RLock()
        self._depth = 0

    def _sql(self, sql: str) -> str:
        return sql

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self.lock:
            cur = self.conn.execute(self._sql(sql), tuple(params))
            return [tuple(_plain(v) for v in row) for row in cur.fetchall()]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self.lock:
            self.conn.execute(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.lock:
            self.conn.cursor().executemany(self._sql(sql), [tuple(r) for r in rows])

    def insert_id(self, sql: str, params: Sequence[Any]) -> int:
        """Run an INSERT ending in ``RETURNING id`` and give the id."""
        with self.lock, self.transaction():
            return int(self.query(sql, params)[0][0])

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All statements inside commit together or not at all (nested calls join the outer)."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._begin()
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self.conn.rollback() if self.dialect == "postgres" else self.conn.execute("ROLLBACK")  # fmt: skip
                raise
            self._depth = 0
            self.conn.commit() if self.dialect == "postgres" else self.conn.execute("COMMIT")

    def _begin(self) -> None:
        raise NotImplementedError

    def script(self, text: str) -> None:
        raise NotImplementedError

    def has_table(self, name: str) -> bool:
        raise NotImplementedError

    def text_search(self, q: str, limit: int) -> list[tuple[int, float]]:
        """``(explanation id, score)`` of the explanations matching the words of ``q``, best
        first (the score grows with the match)."""
        raise NotImplementedError

    def compact(self) -> None:
        """Give back the space of deleted rows (a build's checkpoints) where the backend can."""

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def _plain(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


class SQLiteBackend(Backend):
    dialect = "sqlite"

    def compact(self) -> None:
        with self.lock:
            self.conn.executescript("PRAGMA incremental_vacuum;")  # runs it to the end

    def _begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def script(self, text: str) -> None:
        with self.lock:
            self.conn.executescript(text)

    def has_table(self, name: str) -> bool:
        rows = self.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [name])
        return bool(rows)

    def text_search(self, q: str, limit: int) -> list[tuple[int, float]]:
        words = _WORD.findall(q)
        if not words:
            return []
        match = " ".join('"' + w.replace('"', "") + '"' for w in words)  # every word, as text
        rows = self.query(
            "SELECT rowid, bm25(explanations_fts) FROM explanations_fts "
            "WHERE explanations_fts MATCH ? ORDER BY bm25(explanations_fts), rowid LIMIT ?",
            [match, limit],
        )
        return [(int(i), -float(s)) for i, s in rows]


class PostgresBackend(Backend):
    dialect = "postgres"

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def _begin(self) -> None:
        pass  # psycopg opens a transaction at the first statement (autocommit is off)

    def script(self, text: str) -> None:
        with self.lock, self.transaction():
            self.conn.execute(text)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self.lock:
            out = super().query(sql, params)
            if not self._depth:
                self.conn.commit()  # end the implicit read transaction
            return out

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self.lock:
            super().execute(sql, params)
            if not self._depth:
                self.conn.commit()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.lock:
            super().executemany(sql, rows)
            if not self._depth:
                self.conn.commit()

    def has_table(self, name: str) -> bool:
        return bool(self.query("SELECT to_regclass(?)", [name])[0][0])

    def text_search(self, q: str, limit: int) -> list[tuple[int, float]]:
        words = _WORD.findall(q)
        if not words:
            return []
        rows = self.query(
            "SELECT id, ts_rank(tsv, query) FROM explanations, plainto_tsquery('english', ?) query "
            "WHERE tsv @@ query ORDER BY ts_rank(tsv, query) DESC, id LIMIT ?",
            [" ".join(words), limit],
        )
        return [(int(i), float(s)) for i, s in rows]


def _open_sqlite(path: str, readonly: bool, create: bool) -> SQLiteBackend:
    file = Path(path)
    if not file.exists() and (readonly or not create):
        raise MechscopeError(
            f"no feature database at {file}: build one with 'mechscope features build'"
        )
    try:
        if readonly:
            conn = sqlite3.connect(
                f"{file.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False,
                isolation_level=None,
            )  # fmt: skip
        else:
            file.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(file, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect in a new file only
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
    except sqlite3.DatabaseError as exc:
        raise MechscopeError(
            f"{file} is not a mechscope feature database ({exc}); pass a file written by "
            "'mechscope features build'"
        ) from None
    return SQLiteBackend(conn, readonly, str(file))


def _open_postgres(url: str, readonly: bool) -> PostgresBackend:
    try:
        import psycopg
    except ImportError:
        raise MechscopeError("PostgreSQL needs psycopg: pip install 'psycopg[binary]'") from None
    options = "-c default_transaction_read_only=on" if readonly else ""
    try:
        conn = psycopg.connect(url, options=options, connect_timeout=10)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MechscopeError(f"cannot connect to {_redact(url)} ({first}); check the URL") from None
    return PostgresBackend(conn, readonly, _redact(url))


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def open_backend(path_or_url: str, readonly: bool = False, create: bool = False) -> Backend:
    """A backend for an SQLite path or a ``postgresql://`` / ``postgres://`` URL."""
    spec = str(path_or_url)
    if spec.startswith(("postgresql://", "postgres://")):
        return _open_postgres(spec, readonly)
    return _open_sqlite(spec, readonly, create)
