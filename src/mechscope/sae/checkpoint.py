"""Training checkpoints that resume exactly, with no pickles.

A checkpoint is a folder ``step-<N>/`` inside the checkpoint directory holding
``sae.safetensors`` (every parameter and buffer), ``optimizer.safetensors`` (Adam's
``exp_avg``, ``exp_avg_sq`` and ``step`` per parameter), ``trainer.safetensors`` (tokens since
each latent fired) and ``trainer.json`` (step, tokens, loss curve, SAE config, training config).
It is written under a unique temporary name and renamed; then ``latest.json`` is replaced
atomically to point at it and older checkpoints are removed, so a crash at any moment leaves a
complete checkpoint.

A checkpoint resumes only a run with the same settings: every field of the SAE config but its
provenance (model_name, dataset, version) and every field of the training config but
``checkpoint_every``; otherwise :func:`load_checkpoint` names the settings that differ. A damaged
or dangling ``latest.json`` is a one-line error too. :func:`locked` makes a training run the only
writer of its checkpoint folder, and :func:`clear_checkpoints` removes what this module wrote and
nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from mechscope.errors import MechscopeError
from mechscope.files import atomic_folder, folder_lock, write_atomic
from mechscope.sae.base import SAE

__all__ = [
    "TrainState",
    "clear_checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "locked",
    "run_settings",
    "save_checkpoint",
    "settings_diff",
]

LATEST = "latest.json"
STEP = re.compile(r"step-\d+")  # a checkpoint folder
TEMP = re.compile(r"\.step-\d+\..*\.tmp")  # one being written (or left by a crash)
PROVENANCE = ("model_name", "dataset", "version")  # SAE config fields that never compute
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class TrainState:
    """What the trainer carries from step to step besides the weights and Adam."""

    step: int
    tokens: int
    tokens_since_fired: Tensor  # [d_sae] int64
    history: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def new(cls, d_sae: int, device: torch.device | str | None = None) -> TrainState:
        return cls(0, 0, torch.zeros(d_sae, dtype=torch.int64, device=device))


def run_settings(sae: SAE, train_cfg: Any = None) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed, as JSON values."""
    out = {k: v for k, v in dataclasses.asdict(sae.cfg).items() if k not in PROVENANCE}
    if train_cfg is not None:
        out.update(
            (k, v) for k, v in dataclasses.asdict(train_cfg).items() if k != "checkpoint_every"
        )
    return json.loads(json.dumps(out))


def settings_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``"k 32 -> 8, lr 0.0004 -> 0.001"`` for the keys whose values differ ('' when none)."""
    keys = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


def save_checkpoint(
    directory: str | Path,
    sae: SAE,
    opt: torch.optim.Optimizer,
    state: TrainState,
    train_cfg: Any = None,
) -> Path:
    """Write ``step-<N>/`` atomically, point ``latest.json`` at it, remove older checkpoints."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{state.step}"
    final = root / name
    with atomic_folder(final, replace=True) as tmp:  # .step-N.XXXX.tmp: TEMP matches it
        weights = {k: v.detach().contiguous() for k, v in sae.state_dict().items()}
        save_file(weights, tmp / "sae.safetensors")
        save_file(_optimizer_tensors(opt), tmp / "optimizer.safetensors")
        fired = {"tokens_since_fired": state.tokens_since_fired.contiguous()}
        save_file(fired, tmp / "trainer.safetensors")
        meta = {
            "step": state.step,
            "tokens": state.tokens,
            "history": state.history,
            "sae": dataclasses.asdict(sae.cfg),
            "settings": run_settings(sae, train_cfg),
        }
        (tmp / "trainer.json").write_text(json.dumps(meta))
    write_atomic(root / LATEST, json.dumps({"checkpoint": name}))
    for old in root.iterdir():  # older checkpoints and a crashed run's temporaries, nothing else
        if old.is_dir() and old != final and (STEP.fullmatch(old.name) or TEMP.fullmatch(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """The latest checkpoint's folder and ``trainer.json``; None when there is no checkpoint."""
    if not (root / LATEST).exists():
        return None
    fix = f"delete {root} to start over"
    try:
        name = json.loads((root / LATEST).read_text(encoding="utf-8"))["checkpoint"]
        if not (isinstance(name, str) and STEP.fullmatch(name)):
            raise ValueError(f"{name!r} is not a checkpoint name")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MechscopeError(f"{root / LATEST} is damaged ({exc}); {fix}") from None
    folder = root / name
    try:
        meta = json.loads((folder / "trainer.json").read_text(encoding="utf-8"))
        int(meta["step"]), int(meta["tokens"]), list(meta["history"]), dict(meta["sae"])
    except FileNotFoundError:
        raise MechscopeError(
            f"{root / LATEST} points at {name}, which is missing or incomplete; {fix}"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MechscopeError(f"{folder / 'trainer.json'} is damaged ({exc}); {fix}") from None
    return folder, meta


def load_checkpoint(
    directory: str | Path, sae: SAE, opt: torch.optim.Optimizer, train_cfg: Any = None
) -> TrainState | None:
    """Restore ``sae`` and ``opt`` from the latest checkpoint; None when there is none.

    A checkpoint of other settings (``sae.cfg``, and ``train_cfg`` when given) is an error that
    names them.
    """
    root = Path(directory)
    found = latest_checkpoint(root)
    if found is None:
        return None
    folder, meta = found
    saved = meta.get("settings") or run_settings_from(meta["sae"])
    wanted = run_settings(sae, train_cfg)
    shared = saved.keys() & wanted.keys()  # a field of a newer or older mechscope is not compared
    diff = settings_diff({k: saved[k] for k in shared}, {k: wanted[k] for k in shared})
    if diff:
        raise MechscopeError(
            f"checkpoint in {root} is of a run with other settings ({diff}); train with the "
            "same settings to resume it, or use another checkpoint folder"
        )
    try:
        sae.load_state_dict(load_file(folder / "sae.safetensors"))
        _load_optimizer(opt, load_file(folder / "optimizer.safetensors"))
        fired = load_file(folder / "trainer.safetensors")["tokens_since_fired"]
        fired = fired.to(sae.W_enc.device)
    except (OSError, SafetensorError, KeyError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MechscopeError(
            f"checkpoint {folder} is damaged ({first}); delete {root} to start over"
        ) from None
    return TrainState(meta["step"], meta["tokens"], fired, meta["history"])


def run_settings_from(saved_sae: dict[str, Any]) -> dict[str, Any]:
    """The settings of a checkpoint written before training settings were recorded."""
    return {k: v for k, v in saved_sae.items() if k not in PROVENANCE}


def clear_checkpoints(directory: str | Path) -> None:
    """Remove the checkpoints, temporaries and ``latest.json`` written here, then the folder if
    that leaves it empty; anything else in it stays."""
    root = Path(directory)
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.is_dir() and (STEP.fullmatch(path.name) or TEMP.fullmatch(path.name)):
            shutil.rmtree(path, ignore_errors=True)
        elif path.name == LATEST or re.fullmatch(rf"\.{re.escape(LATEST)}\..*\.tmp", path.name):
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        root.rmdir()


def locked(fn: F) -> F:
    """Decorate a trainer ``fn(..., checkpoint_dir=None, ...)`` to hold the checkpoint folder's
    lock while it runs, so two runs never write one folder."""

    @functools.wraps(fn)
    def wrapper(*args: Any, checkpoint_dir: str | Path | None = None, **kwargs: Any) -> Any:
        if checkpoint_dir is None:
            return fn(*args, **kwargs)
        with folder_lock(checkpoint_dir, "SAE training"):
            return fn(*args, checkpoint_dir=checkpoint_dir, **kwargs)

    return wrapper  # type: ignore[return-value]


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, Tensor]:
    out = {}
    for i, per_param in opt.state_dict()["state"].items():
        for key, value in per_param.items():
            out[f"{i}.{key}"] = torch.as_tensor(value).detach().clone().contiguous()
    return out


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        i, key = name.split(".", 1)
        state.setdefault(int(i), {})[key] = value
    saved = opt.state_dict()
    opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
