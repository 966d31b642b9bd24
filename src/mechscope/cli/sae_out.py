"""The output folder of ``mechscope sae train``: whose it is, what it may delete, when to resume.

The folder holds what a run writes and nothing it deletes besides: ``cfg.json`` and
``sae_weights.safetensors`` (the SAE), ``training.json`` (the run record) and ``checkpoints/``
(while training). ``training.json`` is written first, with the run's settings and
``"complete": false``, and rewritten with the scores at the end, so a folder is a run's own when
its ``training.json`` says so. Then:

- an empty or new folder starts a run; a non-empty folder that is no run's is refused unless
  ``--overwrite`` (which replaces the files a run writes and keeps every other file);
- a run with the same settings resumes from its checkpoint, or, when it is complete, is not
  trained again; other settings are a one-line error naming them;
- at the end only the checkpoints this run wrote are removed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from mechscope.errors import MechscopeError
from mechscope.files import LOCK_FILE, write_atomic

__all__ = ["CHECKPOINTS", "RECORD", "prepare_out", "run_options", "write_record"]

RECORD = "training.json"
CHECKPOINTS = "checkpoints"
FORMAT = "mechscope-sae-training/1"
_WRITTEN = ("cfg.json", "sae_weights.safetensors", RECORD)  # the files a run writes
_TEMP = re.compile(r"\.(cfg\.json|sae_weights\.safetensors|training\.json)\..*tmp")
_NOT_SETTINGS = ("acts", "out", "quiet", "overwrite", "checkpoint_every")


def run_options(ctx: click.Context, store_id: str) -> dict[str, Any]:
    """The command's options that shape the result, by flag (``--k``), and the store's id."""
    flags = {p.name: p.opts[0] for p in ctx.command.params if isinstance(p, click.Option)}
    options = {flags[k]: v for k, v in ctx.params.items() if k not in _NOT_SETTINGS and k in flags}
    return {"--acts (store content)": store_id, **options}


def _read_record(folder: Path) -> dict[str, Any] | None:
    """The run record, or None when the folder has no record of a mechscope run."""
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return (
        record if isinstance(record, dict) and ("history" in record or "format" in record) else None
    )


def _remove_written(folder: Path) -> None:
    """Remove the files a run writes (and their temporaries, and its checkpoints)."""
    from mechscope.sae.checkpoint import clear_checkpoints

    for path in folder.iterdir():
        if path.name in _WRITTEN or _TEMP.fullmatch(path.name):
            path.unlink(missing_ok=True)
    clear_checkpoints(folder / CHECKPOINTS)


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = [k for k in new if old.get(k) != new[k]] + [k for k in old if k not in new]
    return ", ".join(
        f"{k} {old.get(k)!r} -> {new.get(k)!r}" if not k.startswith("--acts") else f"{k} differs"
        for k in keys
    )


def prepare_out(folder: Path, settings: dict[str, Any], overwrite: bool) -> str:
    """``"new"``, ``"resume"`` or ``"done"`` for a run of ``settings`` into ``folder`` (which the
    caller has locked); a folder that cannot take the run is a :class:`MechscopeError`."""
    entries = sorted(p.name for p in folder.iterdir() if p.name != LOCK_FILE)
    if not entries:
        return "new"
    record = _read_record(folder)
    if overwrite:
        _remove_written(folder)
        return "new"
    if record is None:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise MechscopeError(
            f"{folder} is not empty and holds no `mechscope sae train` run ({shown}); use an "
            "empty or new --out, or pass --overwrite to write the SAE into it (other files stay)"
        )
    old = record.get("settings")
    if old is None:
        raise MechscopeError(
            f"{folder} holds a run whose settings were not recorded (an older mechscope); "
            "pass --overwrite to replace it or use another --out"
        )
    diff = _diff(old, settings)
    if diff:
        raise MechscopeError(
            f"{folder} holds a run with other settings ({diff}); rerun with its settings to "
            "resume it, pass --overwrite to replace it, or use another --out"
        )
    for name in entries:
        if _TEMP.fullmatch(name):  # a crashed write's temporary
            (folder / name).unlink(missing_ok=True)
    done = record.get("complete") and all((folder / n).is_file() for n in _WRITTEN)
    return "done" if done else "resume"


def write_record(folder: Path, settings: dict[str, Any], summary: dict[str, Any] | None) -> None:
    """Write ``training.json``: the settings, and the scores once ``summary`` is given."""
    record = {"format": FORMAT, "complete": summary is not None, "settings": settings}
    write_atomic(folder / RECORD, json.dumps({**record, **(summary or {})}, indent=1))
