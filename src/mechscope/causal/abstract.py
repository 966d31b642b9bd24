"""High-level causal models as small Python functions, and counterfactual datasets from them.

A :class:`CausalModel` lists its input variables and, in topological order, one function per
intermediate or output variable that reads the values computed so far::

    equality = CausalModel(
        inputs=("a", "b", "c", "d"),
        mechanisms={
            "V1": lambda v: v["a"] == v["b"],
            "V2": lambda v: v["c"] == v["d"],
            "O": lambda v: v["V1"] == v["V2"],
        },
        output="O",
    )

``model.counterfactual(base, source, ["V1"])`` is the output of the base input with ``V1`` set to
its value on the source input: the label an interchange intervention on a neural site that
represents ``V1`` must produce. :func:`counterfactuals` samples such pairs, renders them as token
ids and checks that every output is one token of the neural model.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mechscope.causal.data import Counterfactuals
from mechscope.errors import MechscopeError
from mechscope.tasks.vocab import encode, pieces

Values = dict[str, Any]


@dataclass(frozen=True)
class CausalModel:
    """Input variable names, a function per downstream variable (in order), the output's name."""

    inputs: tuple[str, ...]
    mechanisms: Mapping[str, Callable[[Values], Any]]
    output: str
    name: str = "causal model"
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.output not in self.mechanisms:
            raise MechscopeError(
                f"output {self.output!r} has no mechanism; add it to mechanisms "
                f"({', '.join(self.mechanisms)})"
            )
        both = set(self.inputs) & set(self.mechanisms)
        if both:
            raise MechscopeError(f"variables {sorted(both)} are both inputs and mechanisms")

    @property
    def variables(self) -> tuple[str, ...]:
        return (*self.inputs, *self.mechanisms)

    def run(self, inputs: Mapping[str, Any], fixed: Mapping[str, Any] | None = None) -> Values:
        """Every variable's value; ``fixed`` values replace what their mechanisms would compute."""
        missing = [v for v in self.inputs if v not in inputs]
        if missing:
            raise MechscopeError(f"{self.name}: inputs {missing} have no value; give all inputs")
        fixed = dict(fixed or {})
        unknown = [v for v in fixed if v not in self.variables]
        if unknown:
            raise MechscopeError(
                f"{self.name} has no variable {unknown[0]!r}; choose from {', '.join(self.variables)}"
            )
        values: Values = {v: fixed.get(v, inputs[v]) for v in self.inputs}
        for name, fn in self.mechanisms.items():
            values[name] = fixed[name] if name in fixed else fn(values)
        return values

    def counterfactual(
        self, base: Mapping[str, Any], source: Mapping[str, Any], variables: Sequence[str]
    ) -> Any:
        """The output of ``base`` with ``variables`` set to their values on ``source``."""
        src = self.run(source)
        return self.run(base, {v: src[v] for v in variables})[self.output]


def output_token(tokenizer: Any, value: Any, to_token: Callable[[Any], Any]) -> int:
    """The one token id of an output value (``to_token`` maps it to text or an id)."""
    token = to_token(value)
    if isinstance(token, int) and not isinstance(token, bool):
        return token
    if not isinstance(token, str) or tokenizer is None:
        raise MechscopeError(
            f"causal model output {value!r} maps to {token!r}, not a token id or text with a "
            "tokenizer; make to_token return one token"
        )
    ids = encode(tokenizer, token)
    if len(ids) != 1:
        raise MechscopeError(
            f"causal model output {value!r} is {token!r}, {len(ids)} tokens "
            f"{pieces(tokenizer, token)}, not one; map outputs to single tokens of the model"
        )
    return ids[0]


def counterfactuals(
    model: CausalModel,
    variables: Sequence[str],
    sample: Callable[[random.Random], Mapping[str, Any]],
    render: Callable[[Mapping[str, Any]], Sequence[int] | str],
    to_token: Callable[[Any], Any],
    n: int,
    *,
    tokenizer: Any = None,
    seed: int = 0,
) -> Counterfactuals:
    """``n`` (base, source) pairs of sampled inputs, rendered as prompts, with the counterfactual
    output of interchanging ``variables`` as the label (and the base's own output)."""
    rng = random.Random(seed)
    rows: dict[str, list[Any]] = {"base": [], "source": [], "label": [], "base_label": []}
    for _ in range(n):
        base, source = sample(rng), sample(rng)
        rows["base"].append(_ids(render(base), tokenizer))
        rows["source"].append(_ids(render(source), tokenizer))
        rows["label"].append(
            output_token(tokenizer, model.counterfactual(base, source, variables), to_token)
        )
        rows["base_label"].append(output_token(tokenizer, model.run(base)[model.output], to_token))
    return Counterfactuals.from_lists(**rows, name=f"{model.name}: {'+'.join(variables)}")


def _ids(prompt: Sequence[int] | str, tokenizer: Any) -> list[int]:
    if isinstance(prompt, str):
        if tokenizer is None:
            raise MechscopeError("text prompts need a tokenizer; pass tokenizer=")
        return encode(tokenizer, prompt, special=True)
    return [int(t) for t in prompt]


def labels_as_tensor(values: Sequence[int]) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.long)
