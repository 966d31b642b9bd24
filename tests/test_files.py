"""mechscope.files: atomic writes, the folder lock (two processes, kill -9) and the JSONL reader."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from mechscope.errors import FolderInUseError, MechscopeError
from mechscope.files import (
    LOCK_FILE,
    atomic_folder,
    atomic_path,
    file_lock,
    folder_lock,
    read_jsonl,
    write_atomic,
)


def test_write_atomic_replaces_or_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    write_atomic(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]
    with atomic_path(path) as one, atomic_path(path) as two:  # two writers: two temporary names
        assert one != two and one.parent == two.parent == tmp_path
        one.write_text("one")
        two.write_text("two")
    assert path.read_text() == "one" and oct(path.stat().st_mode & 0o777) == "0o644"
    write_atomic(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"


def test_atomic_folder_publishes_whole_or_not_at_all(tmp_path: Path) -> None:
    entry = tmp_path / "cache" / "entry"
    with pytest.raises(RuntimeError), atomic_folder(entry) as tmp:
        (tmp / "half").write_text("half")
        raise RuntimeError("crash while writing")
    assert not entry.exists() and list(entry.parent.iterdir()) == []
    with atomic_folder(entry) as tmp:
        assert tmp.parent == entry.parent and tmp.name.startswith(".entry.")
        (tmp / "a").write_text("first")
    with atomic_folder(entry) as tmp:  # the entry exists: the first copy stays
        (tmp / "a").write_text("second")
    assert (entry / "a").read_text() == "first" and oct(entry.stat().st_mode & 0o777) == "0o755"
    with atomic_folder(entry, replace=True) as tmp:  # a damaged entry or a checkpoint: replaced
        (tmp / "b").write_text("new")
    assert sorted(p.name for p in entry.iterdir()) == ["b"]
    assert [p.name for p in entry.parent.iterdir()] == ["entry"]  # no temporaries left


@pytest.mark.parametrize("replace", [False, True])
def test_two_writers_publishing_one_entry_at_once(tmp_path: Path, replace: bool) -> None:
    """Both fill their copy before either publishes; neither fails, one complete copy stays."""
    entry, barrier, errors = tmp_path / "entry", threading.Barrier(2, timeout=30), []

    def publish(name: str) -> None:
        try:
            with atomic_folder(entry, replace=replace) as tmp:
                for part in ("x", "y"):
                    (tmp / part).write_text(name)
                barrier.wait()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]
    contents = {(entry / part).read_text() for part in ("x", "y")}
    assert len(contents) == 1 and contents <= {"one", "two"}  # one writer's copy, whole


def test_file_lock_guards_one_file_of_a_folder(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "lens.safetensors"
    with file_lock(out, "job one") as lock:
        assert lock == tmp_path / "sub" / ".lens.safetensors.lock"
        with pytest.raises(FolderInUseError) as info, file_lock(out, "job two"):
            pass
        assert str(info.value).startswith(f"{out} is in use by job one (pid {os.getpid()} on ")
        assert str(info.value).endswith("or use another file")
        with file_lock(out.with_name("other.safetensors"), "job three"):
            pass  # another file of the same folder is free
    assert list(out.parent.iterdir()) == []


def test_lock_names_its_holder_and_is_released(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "out"
    with folder_lock(folder, "job one") as lock:
        assert lock == folder / LOCK_FILE and json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(FolderInUseError) as info, folder_lock(folder, "job two"):
            pass
        message = str(info.value)
        assert message.startswith(f"{folder} is in use by job one (pid {os.getpid()} on ")
        assert socket.gethostname() in message and "\n" not in message
    assert not (folder / LOCK_FILE).exists()  # released and removed
    with folder_lock(folder, "job two"):
        pass
    (tmp_path / "file").write_text("not a folder")
    with (
        pytest.raises(MechscopeError, match="cannot write to .*file"),
        folder_lock(tmp_path / "file" / "out", "job"),
    ):
        pass


HOLDER = textwrap.dedent(
    """
    import sys, time
    from mechscope.files import folder_lock
    with folder_lock(sys.argv[1], "holder"):
        print("held", flush=True)
        time.sleep(120)
    """
)


def test_lock_of_a_killed_process_does_not_block(tmp_path: Path) -> None:
    """Another process holds the folder; once it is killed with SIGKILL the lock is free."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        held = rf"in use by holder \(pid {proc.pid} on "
        with pytest.raises(FolderInUseError, match=held), folder_lock(tmp_path, "me"):
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert (tmp_path / LOCK_FILE).exists()  # the dead holder's file is still there...
    with folder_lock(tmp_path, "me") as lock:  # ...and does not block
        assert json.loads(lock.read_text())["job"] == "me"


def lines_of(path: Path, data: bytes) -> list:
    path.write_bytes(data)
    return list(read_jsonl(path))


def error_of(path: Path, data: bytes) -> str:
    with pytest.raises(MechscopeError) as info:
        lines_of(path, data)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_jsonl_lines_and_columns_are_the_files(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    good = b'\xef\xbb\xbf{"a": 1}\r\n\n{"b":\r 2, "c": "\\u2028"}\n  \n[2]'
    assert lines_of(path, good) == [(1, {"a": 1}), (3, {"b": 2, "c": "\u2028"}), (5, [2])]
    # a raw control character (a tab) inside a string, at the column an editor shows
    line = '{"clean": "When Mary and\tJohn", "corrupt": "x"}'
    message = error_of(path, b'{"a": 1}\n' + line.encode())
    assert f"line 2 is not valid JSON at column {line.index(chr(9)) + 1} (" in message
    assert "raw control character U+0009 in a string" in message
    # multi-byte characters before it: the character column, and the byte
    line = '{"clean": "Café über\x01"}'
    message = error_of(path, line.encode())
    column, byte = line.index("\x01") + 1, len(line[: line.index("\x01")].encode()) + 1
    assert f"line 1 is not valid JSON at column {column} (byte {byte})" in message
    # a stray \r ends no line: the error after it is still on line 2
    message = error_of(path, b'{"a":\r "y"}\n{"a": 1,}\n')
    assert "line 2 is not valid JSON at column 9" in message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a": 1}\n{"a": "caf\xe9"}\n', "line 2 is not UTF-8 text (byte 0xe9 at byte 11)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "line 1 is not UTF-8 text (byte 0x89 at byte 1)"),
        (b'{"a": 1}\n\x1a\x00\x00\x01', "line 2 holds NUL bytes: a binary file"),
        (b'{"a": NaN}', "line 1: NaN is not a JSON number; write a finite number"),
        (b'{"a": -Infinity}', "line 1: -Infinity is not a JSON number"),
        (b'{"a": 1', "line 1 is not valid JSON at column 8 (expecting ',' delimiter)"),
    ],
)
def test_jsonl_bad_bytes_are_one_line(tmp_path: Path, data: bytes, message: str) -> None:
    assert message in error_of(tmp_path / "t.jsonl", data)
