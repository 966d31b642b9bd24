"""Where mechscope keeps what it computes once, and how it reads and writes files safely.

``cache_root()`` is ``$MECHSCOPE_CACHE`` when set (and not empty), else ``~/.cache/mechscope``: the
GGUF conversions, corpus token caches, tuned lenses and the report's SAE all live below it.

Writing: :func:`atomic_path` / :func:`write_atomic` give a file its new content all at once (a
uniquely named temporary file beside it, fsync, ``os.replace``), so a crash leaves the old or the
new file and two writers never share a temporary name. :func:`atomic_folder` does the same for a
folder (a cache entry, a checkpoint): it is filled under a unique temporary name and renamed into
place; when two processes publish the same entry at once, the first one's folder stays and the
other drops its copy (no error: both wrote the same thing). :func:`folder_lock` makes a long job
the only writer of its output folder (``flock`` on ``<folder>/.mechscope.lock``; the kernel drops
the lock when the process dies, even by ``kill -9``, so a stale lock never blocks a rerun);
:func:`file_lock` does the same for one output file (``.<name>.lock`` beside it), so jobs that
write other files of the folder are not blocked.

Reading: :func:`read_jsonl` parses a JSON Lines file with one-line errors that give the line and
column as an editor shows them (lines split at ``\\n`` only).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mechscope.errors import FolderInUseError, MechscopeError

__all__ = [
    "LOCK_FILE",
    "atomic_folder",
    "atomic_path",
    "cache_root",
    "file_lock",
    "folder_lock",
    "read_jsonl",
    "sha256_file",
    "write_atomic",
]

LOCK_FILE = ".mechscope.lock"


def cache_root() -> Path:
    """The root folder of mechscope's caches."""
    return Path(os.environ.get("MECHSCOPE_CACHE") or "~/.cache/mechscope").expanduser()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """A fresh temporary path beside ``path``; write it in the block, it then replaces ``path``.

    The temporary name is unique (``mkstemp``), so concurrent writers never collide; on an error
    it is removed and ``path`` is untouched. The result is readable by all (mode 0644).
    """
    target = Path(path)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be shared
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, fsync: bool = True) -> None:
    """Write ``data`` (text is UTF-8) to ``path`` so that a crash leaves the old or the new file."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str], *, replace: bool = False) -> Iterator[Path]:
    """A fresh temporary folder beside ``path``; fill it in the block, it then becomes ``path``.

    The temporary name is unique (``.<name>.XXXX.tmp``), so concurrent writers never collide; on
    an error it is removed and ``path`` is untouched. If ``path`` exists when the block ends,
    ``replace=False`` keeps it and drops the new copy (another writer of the same cache entry
    published first: read ``path`` after the block and use its copy); ``replace=True`` moves the
    old folder aside and removes it. The folder is readable by all (mode 0755).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; results are meant to be shared
        if replace:
            _remove_folder(target)
        try:
            os.rename(tmp, target)
        except OSError as exc:  # the target exists and is not empty: another writer won
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_folder(target: Path) -> None:
    """Rename ``target`` aside (one atomic step, so the name is free at once), then delete it."""
    aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old.tmp"))
    try:
        os.rename(target, aside)  # onto the empty folder mkdtemp made
    except FileNotFoundError:
        pass
    except NotADirectoryError:  # a file where the folder goes
        target.unlink()
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _holder(path: Path) -> str:
    """Who holds the lock, from the lock file (written by the holder once it has the lock)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"{info['job']} (pid {info['pid']} on {info['host']}, since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not written its pid yet)"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], job: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the block.

    A second holder, in this process or another, gets :class:`FolderInUseError` naming the job,
    pid and host that hold it. The lock file records the holder and is removed on release.
    """
    root = Path(folder)
    with _lock(root, root / LOCK_FILE, job) as path:
        yield path


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], job: str) -> Iterator[Path]:
    """Hold an exclusive lock on the output file ``path`` for the block, as :func:`folder_lock`
    does on a folder (the lock file is ``.<name>.lock`` beside it; its folder is created)."""
    target = Path(path)
    with _lock(target, target.with_name(f".{target.name}.lock"), job) as lock:
        yield lock


@contextlib.contextmanager
def _lock(subject: Path, path: Path, job: str) -> Iterator[Path]:
    """``flock`` on ``path``; errors name ``subject``, the folder or file the lock guards."""
    import fcntl  # POSIX only; imported here so that importing this module works everywhere

    root = path.parent
    while True:
        try:
            root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise MechscopeError(
                f"cannot write to {root} ({exc.strerror}); pick a folder you can write to"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderInUseError(
                f"{subject} is in use by {_holder(path)}; wait for it to finish or use another "
                f"{'folder' if subject == root else 'file'}"
            ) from None
        except OSError as exc:  # a file system without locks
            os.close(fd)
            raise MechscopeError(
                f"cannot lock {subject} ({exc.strerror}); use a folder on a local file system"
            ) from None
        try:  # the file we locked may have been removed by a holder releasing it: lock it anew
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = {"job": job, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still locked: a waiter then retries on a new file
        os.close(fd)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_error(path: Path, number: int, line: str, exc: json.JSONDecodeError) -> MechscopeError:
    """The column counts characters, as editors do; the byte offset is added when multi-byte
    characters come before the error."""
    byte = len(line[: exc.pos].encode("utf-8")) + 1
    column = f"column {exc.colno}" + (f" (byte {byte})" if byte != exc.colno else "")
    msg = exc.msg.removesuffix(" at").removesuffix(":")
    if exc.pos < len(line) and ord(line[exc.pos]) < 0x20 and "control character" in msg:
        msg = f"raw control character U+{ord(line[exc.pos]):04X} in a string: escape it"
    return MechscopeError(
        f"{path} line {number} is not valid JSON at {column} ({msg[:1].lower()}{msg[1:]}); "
        "write one JSON object per line"
    )


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of a UTF-8 JSON Lines file.

    Lines are split at ``\\n`` only (a stray ``\\r`` or form feed stays inside its line, as in an
    editor); a UTF-8 byte-order mark is skipped. A binary file, bytes that are not UTF-8, invalid
    JSON and the non-standard constants ``NaN``/``Infinity`` are :class:`MechscopeError` naming the
    line (and column).
    """
    path = Path(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if b"\x00" in raw:
                raise MechscopeError(
                    f"{path} line {number} holds NUL bytes: a binary file, not UTF-8 JSON Lines"
                )
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MechscopeError(
                    f"{path} line {number} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                    f"byte {exc.start + 1}); pass a UTF-8 JSON Lines file"
                ) from None
            line = line.removesuffix("\n").removesuffix("\r")
            if not line.strip():
                continue
            try:
                value = json.loads(line, parse_constant=_no_constants)
            except json.JSONDecodeError as exc:
                raise _json_error(path, number, line, exc) from None
            except ValueError as exc:  # NaN / Infinity
                raise MechscopeError(
                    f"{path} line {number}: {exc}; write a finite number"
                ) from None
            yield number, value
