"""What an audit runs on (:class:`AuditConfig`) and what its steps share (:class:`AuditContext`).

The config is checked before the model is loaded: an unknown task, a missing feature database or
detector folder, or a screening set that is not a file is a one-line error at once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mechscope.errors import MechscopeError

__all__ = ["FINDINGS", "AuditConfig", "AuditContext", "slug"]

FINDINGS = ("circuits", "heads", "lens", "probes", "sae", "features")
"""The analyses the findings section can run, in order (``AuditConfig.findings`` picks some)."""


def slug(name: str) -> str:
    """A file-name-safe form of a task or set name (``data/my task.jsonl`` -> ``my_task``)."""
    stem = Path(name).stem if name.endswith(".jsonl") else name
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "unnamed"


@dataclass(frozen=True)
class AuditConfig:
    """Everything an audit reads besides the model; the same config and seed give the same HTML."""

    tasks: tuple[str, ...] = ("ioi",)  # built-in task names or .jsonl task files
    task_prompts: int = 8  # prompts per task (circuits, validation, compression)
    circuit_fraction: float = 0.01  # edges kept in each task's EAP-IG circuit
    control_seeds: int = 3  # random circuits / head sets of the same size (the controls)
    ablate_heads: int = 3  # top heads by direct logit attribution mean-ablated per task
    probe_set: str = "builtin:is_number"  # labelled set of the probe finding
    probe_layers: int = 4  # evenly spaced layers probed
    features: str | None = None  # a feature database (SQLite path or postgresql:// URL)
    top_features: int = 8  # explained features shown, best score first
    detector: str | None = None  # a folder written by `mechscope anomaly fit`
    screen: tuple[tuple[str, str], ...] = ()  # (name, path) sets scored by the detector
    fpr: float = 0.01  # false-positive rate the detector's threshold is calibrated at
    compress_bits: tuple[float, ...] = ()  # effective bits of the compression check; () skips it
    findings: tuple[str, ...] = FINDINGS  # which analyses the findings section runs
    intended_use: str = ""  # the deployer's statement of intended use (shown as given)
    corpus: Any = None  # text of the corpus-driven analyses (None: the built-in corpus)
    sae: str | None = None  # an SAE folder for the SAE finding; None: the report's cached one
    seed: int = 0
    command: tuple[str, ...] = ()  # the command line, for the reproducibility manifest

    def __post_init__(self) -> None:
        from mechscope.tasks import TASKS

        if not self.tasks:
            raise MechscopeError("the audit needs at least one task; pass --tasks ioi,...")
        for task in self.tasks:
            if task not in TASKS and not Path(task).is_file():
                raise MechscopeError(
                    f"unknown task {task!r}; choose from {', '.join(TASKS)} or pass a .jsonl file"
                )
        unknown = sorted(set(self.findings) - set(FINDINGS))
        if unknown:
            raise MechscopeError(f"unknown findings {unknown}; choose from {', '.join(FINDINGS)}")
        if self.task_prompts < 2 or self.control_seeds < 1 or self.ablate_heads < 1:
            raise MechscopeError("task_prompts must be >= 2, control_seeds and ablate_heads >= 1")
        if not 0 < self.fpr < 1:
            raise MechscopeError(f"--fpr must lie in (0, 1), got {self.fpr}")
        self._check_paths()

    def _check_paths(self) -> None:
        if self.features and "://" not in self.features and not Path(self.features).is_file():
            raise MechscopeError(
                f"feature database {self.features} not found; build one with "
                "'mechscope features build' or leave out --features"
            )
        if self.features and Path(self.features).is_file():
            from mechscope.features import open_db

            with open_db(self.features, readonly=True):  # not a feature database: error now
                pass
        if self.detector and not (Path(self.detector) / "detector.json").is_file():
            raise MechscopeError(
                f"detector {self.detector} not found (no detector.json); fit one with "
                "'mechscope anomaly fit' or leave out --detector"
            )
        if self.screen and not self.detector:
            raise MechscopeError("--screen needs --detector (the detector that scores the sets)")
        for name, path in self.screen:
            if not Path(path).exists():
                raise MechscopeError(f"screening set {name}={path} not found; pass a text or JSONL")
        if len({name for name, _ in self.screen}) < len(self.screen):
            raise MechscopeError("two screening sets have the same name; name each NAME=PATH")
        for bits in self.compress_bits:
            if not 2.5 <= bits <= 16:
                raise MechscopeError(f"compression bits must lie in [2.5, 16], got {bits}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (the corpus by name), as the manifest records them."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("corpus", "command")}
        corpus = self.corpus
        out["corpus"] = corpus if corpus is None or isinstance(corpus, str) else corpus.name
        return json.loads(json.dumps(out))


@dataclass
class AuditContext:
    """Shared by the steps of one audit: its config, folder, JSON record and HTML fragments."""

    config: AuditConfig
    out_dir: Path
    data: dict[str, Any] = field(default_factory=dict)  # written to audit.json
    parts: dict[str, Any] = field(default_factory=dict)  # name -> rendered HTML fragment
    timings: dict[str, float] = field(default_factory=dict)

    def folder(self, *names: str) -> Path:
        """``out_dir/names...``, created."""
        path = self.out_dir.joinpath(*names)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def artefact(self, path: Path, payload: Any) -> str:
        """Write ``payload`` as JSON to ``path`` (inside the audit folder); its relative link."""
        from mechscope.files import write_atomic

        text = json.dumps(payload, indent=1, sort_keys=True, default=str)
        write_atomic(path, text + "\n", fsync=False)
        return self.link(path)

    def link(self, path: Path) -> str:
        """The path relative to the audit folder, with forward slashes (an HTML link)."""
        return path.relative_to(self.out_dir).as_posix()
