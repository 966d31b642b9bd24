"""The prompts of the LLM explainer and judges, kept in one TOML file that users can edit.

The default file is ``prompts.toml`` beside this module; ``--prompts FILE`` replaces it. Each
section (``explain``, ``detection``, ``fuzzing``, ``detection_batch``, ``fuzzing_batch`` (several
numbered texts per call, :mod:`.numbered`), ``simulation``) has a ``system`` and a ``user``
message with ``$name`` fields (:class:`string.Template`) and optional worked examples
(``[[explain.demo]]`` tables with ``user`` and ``assistant``), sent as earlier turns of the chat:
small models follow a shown answer far better than a described one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

import tomllib

from mechscope.errors import MechscopeError

__all__ = ["DEFAULT_PROMPTS", "SECTIONS", "Prompts", "load_prompts"]

DEFAULT_PROMPTS = Path(__file__).with_name("prompts.toml")
SECTIONS = ("explain", "detection", "fuzzing", "detection_batch", "fuzzing_batch", "simulation")
Chat = list[dict[str, str]]


@dataclass(frozen=True)
class Prompts:
    """The (system, user, demos) templates of each section."""

    sections: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]]
    path: str

    def chat(self, section: str, **fields: str) -> Chat:
        """The chat messages of ``section`` with ``fields`` filled in."""
        system, user, demos = self.sections[section]
        try:
            chat = [{"role": "system", "content": Template(system).substitute(fields)}]
            for asked, answered in demos:
                chat += [{"role": "user", "content": asked}, {"role": "assistant", "content": answered}]  # fmt: skip
            return [*chat, {"role": "user", "content": Template(user).substitute(fields)}]
        except (KeyError, ValueError) as exc:
            raise MechscopeError(
                f"prompt [{section}] in {self.path} has an unknown or bad field ({exc}): "
                f"use only ${', $'.join(sorted(fields))} (write $$ for a dollar sign)"
            ) from None


def load_prompts(path: str | Path | None = None) -> Prompts:
    """Read the prompt file (the default one when ``path`` is None)."""
    file = Path(path) if path is not None else DEFAULT_PROMPTS
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MechscopeError(f"no prompt file {file}: pass an existing TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise MechscopeError(f"prompt file {file} is not valid TOML ({exc})") from None
    sections = {}
    for name in SECTIONS:
        entry = data.get(name)
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) for k in ("system", "user")
        ):
            raise MechscopeError(
                f"prompt file {file} lacks [{name}] with string keys system and user: "
                f"copy {DEFAULT_PROMPTS} and edit it"
            )
        demos = entry.get("demo", [])
        if not isinstance(demos, list) or not all(
            isinstance(d, dict)
            and isinstance(d.get("user"), str)
            and isinstance(d.get("assistant"), str)
            for d in demos
        ):
            raise MechscopeError(
                f"prompt file {file}: every [[{name}.demo]] needs string keys user and assistant"
            )
        pairs = tuple((d["user"], d["assistant"]) for d in demos)
        sections[name] = (entry["system"], entry["user"], pairs)
    return Prompts(sections, str(file))
