"""Counterfactual datasets: (base, source) prompt pairs with the label an intervention must give.

:class:`Counterfactuals` holds token ids ``base`` and ``source`` ``[pair pos]`` (each pair has one
length; pairs may be right-padded), the counterfactual ``label`` and the base's own ``base_label``
``[pair]`` and each base's last position ``read_pos``. :func:`from_task` reads a task's clean
prompts as bases and its corrupted prompts as sources, for tasks whose corrupted prompt has its own
answer (``ioi-swap``, ``mcqa``, ``arithmetic``): the label of interchanging the variable "the
answer" is the source's answer, the task's ``wrong`` token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from mechscope.causal.subspace import position_index
from mechscope.errors import MechscopeError
from mechscope.tasks.base import Task
from mechscope.tasks.ioi import ioi_positions

Tensor = torch.Tensor


@dataclass(frozen=True)
class Counterfactuals:
    """Counterfactual pairs as tensors; ``mask`` is the shared attention mask (None: no padding)."""

    name: str
    base: Tensor
    source: Tensor
    label: Tensor
    base_label: Tensor
    read_pos: Tensor
    mask: Tensor | None = None
    positions: Mapping[str, Tensor] = field(default_factory=dict)  # name -> [pair]

    def __len__(self) -> int:
        return self.base.shape[0]

    @classmethod
    def from_lists(
        cls,
        base: Sequence[Sequence[int]],
        source: Sequence[Sequence[int]],
        label: Sequence[int],
        base_label: Sequence[int],
        name: str = "counterfactuals",
        pad: int = 0,
    ) -> Counterfactuals:
        """Pairs from token-id lists; a pair whose two prompts differ in length fails."""
        if not base:
            raise MechscopeError("no counterfactual pairs; give at least one")
        for i, (b, s) in enumerate(zip(base, source, strict=True)):
            if len(b) != len(s):
                raise MechscopeError(
                    f"counterfactual pair {i}: base is {len(b)} tokens but source is {len(s)}; "
                    "interventions align positions, so pick prompts of equal token length"
                )
        n = max(len(b) for b in base)
        tokens = torch.full((2, len(base), n), pad, dtype=torch.long)
        mask = torch.zeros((len(base), n), dtype=torch.long)
        for i, (b, s) in enumerate(zip(base, source)):
            tokens[0, i, : len(b)] = torch.tensor(list(b))
            tokens[1, i, : len(s)] = torch.tensor(list(s))
            mask[i, : len(b)] = 1
        return cls(
            name=name,
            base=tokens[0],
            source=tokens[1],
            label=torch.tensor(list(label), dtype=torch.long),
            base_label=torch.tensor(list(base_label), dtype=torch.long),
            read_pos=mask.sum(1) - 1,
            mask=None if bool(mask.bool().all()) else mask,
        )

    def subset(self, index: Tensor | slice) -> Counterfactuals:
        m = None if self.mask is None else self.mask[index]
        return replace(
            self,
            base=self.base[index],
            source=self.source[index],
            label=self.label[index],
            base_label=self.base_label[index],
            read_pos=self.read_pos[index],
            mask=m,
            positions={name: pos[index] for name, pos in self.positions.items()},
        )

    def position_names(self) -> list[str]:
        return ["last", *self.positions]

    def resolve(self, positions: Any) -> Tensor:
        """``[pair npos]``: ints (one position for every pair, or ``[pair npos]``), ``"last"``, a
        name of ``self.positions`` or a list of names."""
        names = [positions] if isinstance(positions, str) else positions
        if isinstance(names, (list, tuple)) and names and all(isinstance(v, str) for v in names):
            cols = []
            for name in names:
                if name != "last" and name not in self.positions:
                    raise MechscopeError(
                        f"unknown position {name!r}; these pairs name "
                        f"{', '.join(self.position_names())} (or give token indices)"
                    )
                cols.append(self.read_pos if name == "last" else self.positions[name])
            return torch.stack(cols, 1)
        return position_index(positions, len(self), self.base.shape[1])

    def split(self, test: float = 0.25, seed: int = 0) -> tuple[Counterfactuals, Counterfactuals]:
        """(train, held-out test) by a seeded shuffle."""
        if not 0 < test < 1:
            raise MechscopeError(f"test must be a fraction in (0, 1), got {test}")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        k = max(1, round(test * len(self)))
        if k >= len(self):
            raise MechscopeError(f"{len(self)} pairs are too few to hold out {test:.0%}")
        return self.subset(order[k:]), self.subset(order[:k])

    def changes(self) -> Tensor:
        """``[pair]`` bool: the intervention must change the output (label != base_label)."""
        return self.label != self.base_label


def from_task(task: Task, tokenizer: Any) -> Counterfactuals:
    """Bases = clean prompts, sources = corrupted prompts, label = the source's answer (the task's
    ``wrong`` token), base_label = the task's answer, and the task's named positions (IOI: ``IO``,
    ``S1``, ``S2``, ``S2+1``; see the module docstring)."""
    batch = task.tokenize(tokenizer, require_same_length=True)
    batch.require_aligned()
    mask = batch.clean_mask
    named: dict[str, Tensor] = {}
    if task.meta.get("generator") == "ioi":
        named = ioi_positions(task, batch.clean_tokens, tokenizer)
    return Counterfactuals(
        name=task.name,
        base=batch.clean_tokens,
        source=batch.corrupt_tokens,
        label=batch.wrong_ids,
        base_label=batch.answer_ids,
        read_pos=batch.last_pos,
        mask=None if bool(mask.bool().all()) else mask,
        positions=named,
    )
