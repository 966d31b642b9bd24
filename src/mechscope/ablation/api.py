"""Ablating node sets: ``ablate``, ``keep_only`` (ablate the complement) and ``ablation_effect``.

``ablate(model, tokens, "L9H6,L9H9", "mean", reference)``:

1. Expand the node spec (:mod:`mechscope.ablation.nodes`) and check it against the model.
2. Unless the kind is ``zero``, run the reference prompts once and cache the ablated sites
   (default reference: the input itself, with its attention mask).
3. Run the input with the ablation hooks (:mod:`mechscope.ablation.hooks`); return the logits.

``keep_only`` ablates every head and MLP not in the node set, as a circuit's faithfulness check
does (Wang et al. 2022, section 4). ``ablation_effect`` measures a task metric before and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mechscope.ablation.hooks import Nodes, ablation_hooks, check_kind, reference_cache
from mechscope.ablation.nodes import complement, format_nodes, parse_nodes
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.tasks.base import TaskBatch
from mechscope.tasks.metrics import Metric, logit_diff

Tensor = torch.Tensor


def ablate(
    model: HookedModel,
    tokens: Tensor,
    nodes: Nodes,
    kind: str = "zero",
    reference: Tensor | None = None,
    attention_mask: Tensor | None = None,
    seed: int | None = 0,
    reference_mask: Tensor | None = None,
) -> Tensor:
    """Logits [batch pos d_vocab] of ``tokens`` with ``nodes`` ablated.

    Args:
        model: the model.
        tokens: token ids [batch pos].
        nodes: a node spec (``"L5H3,L7H*,MLP4"``) or a list of nodes/items.
        kind: a name in :data:`ABLATIONS` (``zero``, ``mean``, ``resample``).
        reference: token ids [ref pos] of the reference set for ``mean``/``resample``; default
            the input itself (with ``attention_mask``).
        attention_mask: [batch pos] of ``tokens`` (1 = real token).
        seed: the resample permutation's seed (None: the identity).
        reference_mask: [ref pos] of ``reference``.
    """
    check_kind(kind)
    cache = None
    if kind != "zero":
        if reference is None:
            reference, reference_mask = tokens, attention_mask
        cache = reference_cache(model, nodes, reference, reference_mask)
    hooks = ablation_hooks(model, nodes, kind, cache, reference_mask=reference_mask, seed=seed)
    return model.run_with_hooks(tokens, hooks, attention_mask=attention_mask)


def keep_only(
    model: HookedModel,
    tokens: Tensor,
    nodes: Nodes,
    kind: str = "zero",
    reference: Tensor | None = None,
    attention_mask: Tensor | None = None,
    seed: int | None = 0,
    reference_mask: Tensor | None = None,
) -> Tensor:
    """Logits with every head and MLP *not* in ``nodes`` ablated (see :func:`complement`).

    Embeddings, norms, the residual stream and attention/MLP biases outside ``hook_z`` stay.
    """
    rest = complement(nodes, model.dims)
    return ablate(model, tokens, rest, kind, reference, attention_mask, seed, reference_mask)


@dataclass(frozen=True)
class AblationEffect:
    """A task metric before and after an ablation, averaged over prompts.

    Fields:
        nodes: the ablated (or, with ``keep_only``, kept) node set as a spec string.
        kind: the ablation kind.
        keep_only: whether the complement of ``nodes`` was ablated.
        before, after: the mean metric on the unablated and the ablated run.
        per_prompt_before, per_prompt_after: the same, per prompt [batch].
    """

    nodes: str
    kind: str
    keep_only: bool
    before: float
    after: float
    per_prompt_before: Tensor
    per_prompt_after: Tensor

    @property
    def change(self) -> float:
        return self.after - self.before

    @property
    def per_prompt_change(self) -> Tensor:
        """``[batch]`` float64: each prompt's ablated minus unablated metric."""
        return (self.per_prompt_after - self.per_prompt_before).double()

    def stats(self, seed: int = 0) -> dict[str, Any]:
        """``change_ci``: the 95% bootstrap interval over prompts of the change, and ``p``: the
        paired permutation p-value that the ablation changes nothing (the labels "ablated" /
        "unablated" swapped within each prompt, :func:`mechscope.stats.signflip_pvalues`); both
        None with one prompt."""
        from mechscope.stats import bootstrap_ci, signflip_pvalues

        diff = self.per_prompt_change.numpy()
        if diff.size < 2:
            return {"change_ci": None, "p": None}
        return {"change_ci": list(bootstrap_ci(diff, seed=seed)),
                "p": signflip_pvalues(diff, seed=seed)}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``nodes, kind, keep_only, before, after, change``, :meth:`stats`
        (``change_ci``, ``p``) and the per-prompt ``per_prompt_before`` / ``per_prompt_after``
        lists."""
        return {
            "nodes": self.nodes,
            "kind": self.kind,
            "keep_only": self.keep_only,
            "before": self.before,
            "after": self.after,
            "change": self.change,
            **self.stats(),
            "per_prompt_before": self.per_prompt_before.tolist(),
            "per_prompt_after": self.per_prompt_after.tolist(),
        }


def ablation_effect(
    model: HookedModel,
    batch: TaskBatch,
    nodes: Nodes,
    kind: str = "zero",
    metric: Metric = logit_diff,
    *,
    reference: str | Tensor = "clean",
    keep: bool = False,
    seed: int | None = 0,
) -> AblationEffect:
    """The metric on ``batch``'s clean prompts, unablated and with ``nodes`` ablated.

    ``reference`` is ``"clean"`` (the batch's clean prompts), ``"corrupt"`` (its corrupted
    prompts, e.g. IOI's ABC set) or token ids [ref pos]; ``keep=True`` ablates the complement.
    """
    if isinstance(reference, str):
        if reference not in ("clean", "corrupt"):
            raise MechscopeError(
                f"reference must be 'clean', 'corrupt' or token ids, not {reference!r}"
            )
        ref_tokens = batch.clean_tokens if reference == "clean" else batch.corrupt_tokens
        ref_mask = batch.clean_mask if reference == "clean" else batch.corrupt_mask
    else:
        ref_tokens, ref_mask = reference, None
    run = keep_only if keep else ablate
    with torch.no_grad():
        before = metric(model(batch.clean_tokens, batch.clean_mask), batch).float().cpu()
        logits = run(
            model, batch.clean_tokens, nodes, kind, ref_tokens, batch.clean_mask, seed, ref_mask
        )
        after = metric(logits, batch).float().cpu()
    return AblationEffect(
        nodes=format_nodes(parse_nodes(nodes)),
        kind=kind,
        keep_only=keep,
        before=float(before.mean()),
        after=float(after.mean()),
        per_prompt_before=before,
        per_prompt_after=after,
    )
