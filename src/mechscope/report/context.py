"""What a report runs on (:class:`ReportConfig`) and what its sections share (:class:`ReportContext`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel

IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"
DEFAULT_PROMPTS = (IOI_PROMPT, "The capital of France is", "1, 2, 3, 4,")

__all__ = ["DEFAULT_PROMPTS", "IOI_PROMPT", "ReportConfig", "ReportContext", "Section"]


@dataclass(frozen=True)
class ReportConfig:
    """The prompts a report reads; build one with :meth:`for_prompts` to use your own."""

    prompts: tuple[str, ...] = DEFAULT_PROMPTS  # next-token predictions are shown for each
    lens_prompt: str = IOI_PROMPT  # the prompt read layer by layer by the logit lens
    lens_target: str | None = " Mary"  # token tracked by the lens; None: the model's top-1
    top_k: int = 5  # predictions shown per prompt
    lens_positions: int = 6  # last positions shown in the logit-lens table
    circuit_task: str = "ioi"  # the task of the circuit section (a name or a .jsonl file)
    circuit_prompts: int = 8  # prompts of the circuit section
    circuit_fraction: float = 0.01  # edges kept in the report's EAP-IG circuit
    circuit_stability: int = 5  # prompt resamples for the circuit's stability (0: skip; >= 2)
    corpus: Any = None  # text of the corpus-driven sections (a Corpus or spec; None: built-in)
    sae: str | None = None  # an SAE folder (SAELens layout); None: train a small one, cached

    def __post_init__(self) -> None:
        if not self.prompts:
            raise MechscopeError("the report needs at least one prompt")
        for prompt in (*self.prompts, self.lens_prompt):
            if not prompt.strip():
                raise MechscopeError("empty prompt; pass some text")
        if self.lens_target is not None and not self.lens_target.strip():
            raise MechscopeError("empty lens target; pass a token such as ' Mary' or None")
        if self.top_k < 1 or self.lens_positions < 1:
            raise MechscopeError("top_k and lens_positions must be at least 1")
        if self.circuit_stability == 1 or self.circuit_stability < 0:
            raise MechscopeError("circuit_stability must be 0 (skip) or at least 2 resamples")

    @classmethod
    def for_prompts(cls, prompts: tuple[str, ...] | list[str]) -> ReportConfig:
        """Your prompts; the lens reads the first and tracks the model's own top prediction."""
        prompts = tuple(prompts)
        if not prompts:
            return cls()
        return cls(prompts=prompts, lens_prompt=prompts[0], lens_target=None)


@dataclass
class ReportContext:
    """Shared by the sections of one report: its config, its folder, and its JSON record."""

    config: ReportConfig
    out_dir: Path
    data: dict[str, Any] = field(default_factory=dict)  # written to report.json


class Section(NamedTuple):
    """One report section: a title and ``fn(model, ctx) -> HTML fragment``."""

    name: str
    fn: Callable[[HookedModel, ReportContext], str]
