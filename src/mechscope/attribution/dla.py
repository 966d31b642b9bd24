"""Direct logit attribution (DLA) of the logit difference to embeddings, layers, heads and neurons.

The final logits are linear in the residual stream once the final norm's divisor is frozen, so the
logit difference between an answer and a wrong token splits exactly into one term per component
that writes to the residual stream (Elhage et al. 2021, "A Mathematical Framework for Transformer
Circuits"; TransformerLens's ``cache.logit_attrs``). Steps:

1. one forward caches, at each prompt's read position only, every component's write: the token
   (and position) embedding, ``hook_attn_out`` and ``attn.hook_result`` (per head), ``hook_mlp_out``
   and ``mlp.hook_post`` (neurons; ``mlp.hook_expert_out`` for mixture-of-experts), and the final
   norm's divisor ``ln_final.hook_scale``;
2. the direction of each prompt is ``(W_U[answer] - W_U[wrong]) * w_norm`` [batch d_model]; for
   LayerNorm it is centred, which equals centring each component (the centring projection is
   symmetric and the mean is linear), so the decomposition stays exact; RMSNorm needs no centring;
3. a component's attribution is ``write . direction / scale``; a neuron's is its activation times
   its down-projection row dotted with the direction. The norm's bias and the unembedding's bias
   give the constant term, and embeddings + attention + MLP + constant = the logit difference.

Where the layer changes a projection's output before adding it (Gemma 2/3 and OLMo 2 post-norms,
Granite's ``residual_multiplier``), heads, neurons and biases are mapped through that change with
the post-norm's divisor frozen at its value in the run (as the final norm's is), so heads + bias
== ``hook_attn_out`` and neurons + bias == ``hook_mlp_out`` stay exact. Gemma's norms scale by
``1 + w``; Granite's logits are divided by ``logits_scaling``. Gemma 2 soft-caps its logits
(``cap * tanh(x / cap)``, monotone but not linear): there the attributed ``logit_diff`` is the
difference of the logits before the cap.

Results keep the prompt axis last (``batch``), so ``result.heads.mean(-1)`` is ``[layer head]``
like the ``attn_head`` patching sweep.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.results import top_abs
from mechscope.tasks.base import TaskBatch

Tensor = torch.Tensor

AXES: dict[str, tuple[str, ...]] = {
    "embed": ("batch",),
    "attn": ("layer", "batch"),
    "attn_bias": ("layer", "batch"),
    "heads": ("layer", "head", "batch"),
    "mlp": ("layer", "batch"),
    "mlp_bias": ("layer", "batch"),
    "neurons": ("layer", "d_mlp", "batch"),
    "experts": ("layer", "expert", "batch"),
    "constant": ("batch",),
    "logit_diff": ("batch",),
}


@dataclass(frozen=True, eq=False)
class DLAResult:
    """Direct logit attributions of ``logit[answer] - logit[wrong]`` at one position per prompt.

    Every field is a float32 CPU tensor with the axes in :attr:`axes` (prompts last). Identities:
    ``embed + attn.sum(0) + mlp.sum(0) + constant == logit_diff``;
    ``heads.sum(1) + attn_bias == attn``; ``neurons.sum(1) + mlp_bias == mlp`` (dense MLPs);
    ``experts.sum(1) + mlp_bias == mlp`` (mixture of experts; ``mlp_bias`` is the shared expert).
    """

    embed: Tensor  # token (+ position) embedding
    attn: Tensor  # each attention block's output, including its output bias
    attn_bias: Tensor  # the output projection's bias alone
    heads: Tensor  # each head's write z_h W_O,h
    mlp: Tensor  # each MLP block's output
    mlp_bias: Tensor  # the down projection's bias alone (MoE: the shared expert's write, or 0)
    neurons: Tensor | None  # activation x down-projection row; None for MoE or neurons=False
    experts: Tensor | None  # each expert's weighted write; None for dense MLPs
    constant: Tensor  # final-norm bias and unembedding bias
    logit_diff: Tensor  # the model's own logit difference
    pos: Tensor  # [batch] the position read in each prompt
    axes: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(AXES))

    def total(self) -> Tensor:
        """The sum of all components, ``[batch]``; equals :attr:`logit_diff`."""
        return self.embed + self.attn.sum(0) + self.mlp.sum(0) + self.constant

    def top_heads(self, k: int = 10) -> list[tuple[int, int, float]]:
        """(layer, head, mean DLA) of the ``k`` heads of largest mean |DLA|, largest first."""
        return [(i[0], i[1], v) for i, v in top_abs(self.heads.mean(-1), k)]

    def to_dict(self, per_prompt: bool = True) -> dict[str, Any]:
        """A JSON-ready dict of plain lists (None for absent fields), with the axis names.

        ``per_prompt=False``: every field is the mean over prompts (its ``batch`` axis dropped,
        ``pos`` omitted), plus ``total`` (the sum of components) and ``top_heads``
        (``{"layer", "head", "dla", "ci", "p"}`` of the 10 heads of largest mean |DLA|; ``ci`` is
        the 95% bootstrap interval over prompts, :func:`mechscope.stats.bootstrap_ci`, and ``p``
        the two-sided sign-flip permutation p-value that the head's mean contribution is zero,
        :func:`mechscope.stats.signflip_pvalues`; both None for one prompt).
        """
        axes = {k: list(v) if per_prompt else list(v[:-1]) for k, v in self.axes.items()}
        out: dict[str, Any] = {"axes": axes}
        for name in (*AXES, *(("pos",) if per_prompt else ())):
            value = getattr(self, name)
            if value is not None and not per_prompt:
                value = value.mean(-1)
            out[name] = None if value is None else value.tolist()
        if not per_prompt:
            out["total"] = float(self.total().mean())
            out["top_heads"] = [
                {"layer": layer, "head": head, "dla": v, **_stats(self.heads[layer, head])}
                for layer, head, v in self.top_heads()
            ]
        return out


def _stats(values: Tensor) -> dict[str, Any]:
    """95% bootstrap interval of the mean over prompts and the sign-flip p-value of mean zero
    (both seeded); None for one prompt."""
    from mechscope.stats import bootstrap_ci, signflip_pvalues

    if values.numel() < 2:
        return {"ci": None, "p": None}
    return {"ci": list(bootstrap_ci(values)), "p": signflip_pvalues(values)}


def read_positions(tokens: Tensor, attention_mask: Tensor | None, pos: Tensor | None) -> Tensor:
    """Each prompt's read position [batch]: ``pos``, or its last real token."""
    batch, n_pos = tokens.shape
    if pos is None:
        if attention_mask is None:
            return torch.full((batch,), n_pos - 1, dtype=torch.long)
        cols = torch.arange(n_pos)[None].expand(batch, -1)
        return torch.where(attention_mask.cpu().bool(), cols, -1).max(-1).values
    pos = torch.as_tensor(pos, dtype=torch.long).cpu().reshape(-1)
    if pos.shape != (batch,) or int(pos.min()) < 0 or int(pos.max()) >= n_pos:
        raise MechscopeError(
            f"pos must give one position in [0, {n_pos}) per prompt ({batch}), got {pos.tolist()}"
        )
    return pos


def logit_diff_directions(model: HookedModel, answer_ids: Tensor, wrong_ids: Tensor) -> Tensor:
    """``W_U[answer] - W_U[wrong]`` [batch d_model] (before the final norm's weight)."""
    w_u = model.unembed.weight  # [d_vocab d_model]
    answer = torch.as_tensor(answer_ids).reshape(-1).to(w_u.device)
    wrong = torch.as_tensor(wrong_ids).reshape(-1).to(w_u.device)
    if answer.shape != wrong.shape:
        raise MechscopeError(
            f"answer_ids {tuple(answer.shape)} and wrong_ids {tuple(wrong.shape)} differ in shape"
        )
    return (w_u[answer] - w_u[wrong]).float()


def _rows_of(module: nn.Module) -> Tensor:
    """A projection's weight as [d_in d_out]: row k is what input unit k writes."""
    if isinstance(module, nn.Linear):
        return module.weight.T
    return module.weight  # GPT-2's Conv1D stores [d_in d_out]


def _bias(module: nn.Module) -> Tensor | None:
    bias = getattr(module, "bias", None)
    return bias.float() if isinstance(bias, Tensor) else None


def _pick_diff(values: Tensor, answer_ids: Tensor, wrong_ids: Tensor) -> Tensor:
    """``values[answer] - values[wrong]`` per prompt, from ``values`` [batch d_vocab]."""
    a = torch.as_tensor(answer_ids).reshape(-1, 1).to(values.device)
    w = torch.as_tensor(wrong_ids).reshape(-1, 1).to(values.device)
    return (values.gather(-1, a) - values.gather(-1, w))[:, 0]


def _site_names(model: HookedModel, neurons: bool) -> list[str]:
    n = model.dims.n_layers
    names = ["hook_embed", "ln_final.hook_scale"]
    names += ["hook_pos_embed"] if "hook_pos_embed" in model.sites else []
    for kind in ("hook_attn_out", "attn.hook_result", "hook_mlp_out"):
        names += [f"blocks.{i}.{kind}" for i in range(n)]
    moe = model.family.moe is not None
    if moe or neurons or model.family.mlp_write:  # a post-norm's divisor needs the neurons
        kind = "mlp.hook_expert_out" if moe else "mlp.hook_post"
        names += [f"blocks.{i}.{kind}" for i in range(n)]
    if "blocks.0.mlp.hook_shared_expert_out" in model.sites:
        names += [f"blocks.{i}.mlp.hook_shared_expert_out" for i in range(n)]
    return names


def _capture(
    model: HookedModel, tokens: Tensor, mask: Tensor | None, pos: Tensor, names: list[str]
) -> tuple[Tensor, dict[str, Tensor]]:
    """Each prompt's logits [batch d_vocab] and site slices {name: [batch ...]} at ``pos``."""
    store: dict[str, Tensor] = {}
    rows = torch.arange(len(pos))

    def keep(t: Tensor, hook: Any) -> None:
        t = t.expand(len(pos), *t.shape[1:])  # hook_pos_embed is [1 pos d_model]
        store[hook.name] = t[rows.to(t.device), pos.to(t.device)].float()

    unembedded: list[Tensor] = []
    handle = model.unembed.register_forward_hook(lambda _m, _a, out: unembedded.append(out))
    try:
        with torch.no_grad(), model.hooks(fwd=[(n, keep) for n in names]):
            logits = model.forward(tokens, mask)
    finally:
        handle.remove()
    if model.dims.logit_softcap is not None:  # attribute the logits before the cap
        logits = unembedded[0] / model.dims.logit_divisor
    return logits[rows.to(logits.device), pos.to(logits.device)].float(), store


def direct_logit_attribution(
    model: HookedModel,
    batch: TaskBatch,
    *legacy: Tensor,
    attention_mask: Tensor | None = None,
    pos: Tensor | None = None,
    neurons: bool = True,
) -> DLAResult:
    """Direct logit attribution of ``logit[answer] - logit[wrong]`` per component, per prompt.

    Args:
        model: the model.
        batch: a task's batch (``task.tokenize(model)``); its clean prompts are read, each at its
            ``last_pos``, with its ``answer_ids``, ``wrong_ids`` and ``clean_mask``.
        pos: [batch] the position read in each prompt; None reads ``batch.last_pos``.
        neurons: also attribute to every MLP neuron (``[layer d_mlp batch]``).

    Deprecated form: ``direct_logit_attribution(model, tokens, answer_ids, wrong_ids,
    attention_mask=..., pos=...)`` (None ``pos`` reads each prompt's last real token); it gives
    the same numbers and raises a :class:`DeprecationWarning`.
    """
    tokens, answer_ids, wrong_ids, attention_mask, pos = _inputs(batch, legacy, attention_mask, pos)
    pos = read_positions(tokens, attention_mask, pos)
    raw = logit_diff_directions(model, answer_ids, wrong_ids)  # [batch d_model]
    if raw.shape[0] != len(pos):
        raise MechscopeError(f"{raw.shape[0]} answer ids for {len(pos)} prompts; give one each")
    logits, acts = _capture(model, tokens, attention_mask, pos, _site_names(model, neurons))
    with torch.no_grad():
        parts = _attribute(model, acts, raw)
        unembed_bias = _bias(model.unembed)
        if unembed_bias is not None:
            bias = unembed_bias[None].expand(len(pos), -1)
            parts["constant"] = parts["constant"] + _pick_diff(bias, answer_ids, wrong_ids)
        parts["logit_diff"] = _pick_diff(logits, answer_ids, wrong_ids)
    return DLAResult(**{k: _cpu(v) for k, v in parts.items()}, pos=pos)


def _inputs(
    batch: Any, legacy: tuple[Any, ...], mask: Tensor | None, pos: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """(tokens, answer ids, wrong ids, mask, pos) of either call form."""
    if isinstance(batch, TaskBatch):
        if legacy or mask is not None:
            raise MechscopeError(
                "direct_logit_attribution takes (model, batch): a TaskBatch carries its own "
                "answer ids, wrong ids and mask"
            )
        read = batch.last_pos if pos is None else pos
        return batch.clean_tokens, batch.answer_ids, batch.wrong_ids, batch.clean_mask, read
    if not isinstance(batch, Tensor):
        raise MechscopeError(
            "direct_logit_attribution takes a TaskBatch (e.g. load_task('ioi', model)"
            f".tokenize(model)), not {type(batch).__name__}"
        )
    warnings.warn(
        "direct_logit_attribution(model, tokens, answer_ids, wrong_ids, attention_mask=...) is "
        "deprecated; pass a TaskBatch: direct_logit_attribution(model, batch) "
        "(see docs/circuits.md)",
        DeprecationWarning,
        stacklevel=3,
    )
    if len(legacy) != 2:
        raise MechscopeError(
            "direct_logit_attribution with token ids needs answer_ids and wrong_ids after them"
        )
    if batch.ndim != 2:
        raise MechscopeError(f"tokens must be [batch pos], got {tuple(batch.shape)}")
    return batch, legacy[0], legacy[1], mask, pos


def _cpu(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().float().cpu()


def _attribute(model: HookedModel, acts: dict[str, Tensor], raw: Tensor) -> dict[str, Any]:
    """Every component's attribution from the cached slices and the raw directions."""
    f, n, batch = model.family, model.dims.n_layers, raw.shape[0]
    norm = model.final_norm
    direction = raw * (norm.weight.float() + f.norm_offset) / model.dims.logit_divisor
    if model.dims.norm == "layer":  # centring the direction == centring every component
        direction = direction - direction.mean(-1, keepdim=True)
    direction = direction / acts["ln_final.hook_scale"]  # the scale is [batch 1]

    def dot(write: Tensor) -> Tensor:  # [batch ... d_model] -> [... batch]
        return torch.einsum("b...d,bd->...b", write, direction)

    def layers(kind: str) -> Tensor:
        return torch.stack([dot(acts[f"blocks.{i}.{kind}"]) for i in range(n)])

    def bias_term(module: nn.Module) -> Tensor:
        bias = _bias(module)
        return torch.zeros(batch) if bias is None else dot(bias[None].expand(batch, -1))

    def block(path: str, i: int) -> nn.Module:
        return model.block(i).get_submodule(path)

    def head_terms(i: int) -> tuple[Tensor, Tensor]:  # heads [head batch], bias [batch]
        result, bias = acts[f"blocks.{i}.attn.hook_result"], _bias(block(f.o, i))
        bias = torch.zeros_like(result[:, 0]) if bias is None else bias[None].expand(batch, -1)
        d = direction * _write_factor(model, f.attn_write, i, result.sum(1) + bias)
        return torch.einsum("bhd,bd->hb", result, d), (bias * d).sum(-1)

    heads, attn_bias = zip(*(head_terms(i) for i in range(n)), strict=True)
    norm_bias = _bias(norm)
    parts: dict[str, Any] = {
        "embed": dot(acts["hook_embed"] + acts.get("hook_pos_embed", 0)),
        "attn": layers("hook_attn_out"),
        "attn_bias": torch.stack(attn_bias),
        "heads": torch.stack(heads),
        "mlp": layers("hook_mlp_out"),
        "constant": torch.zeros(batch) if norm_bias is None else raw @ norm_bias,
        "neurons": None,
        "experts": None,
        "mlp_bias": torch.zeros(n, batch),
    }
    if f.moe is not None:
        parts["experts"] = layers("mlp.hook_expert_out")
        if "blocks.0.mlp.hook_shared_expert_out" in acts:
            parts["mlp_bias"] = layers("mlp.hook_shared_expert_out")
        return parts
    assert f.mlp_out is not None  # a dense family always names its down projection
    downs = [block(f.mlp_out, i) for i in range(n)]
    parts["mlp_bias"] = torch.stack([bias_term(m) for m in downs])
    if "blocks.0.mlp.hook_post" in acts:
        neurons, biases = zip(*(_neuron_terms(model, acts, direction, i, m) for i, m in
                                enumerate(downs)), strict=True)  # fmt: skip
        parts["neurons"], parts["mlp_bias"] = torch.stack(neurons), torch.stack(biases)
    return parts


def _neuron_terms(
    model: HookedModel, acts: dict[str, Tensor], direction: Tensor, i: int, down: nn.Module
) -> tuple[Tensor, Tensor]:
    """Neuron k of layer i writes post[k] * rows[k]: attribution post * (rows @ direction)."""
    post, rows, bias = acts[f"blocks.{i}.mlp.hook_post"], _rows_of(down).float(), _bias(down)
    bias = torch.zeros_like(direction) if bias is None else bias[None].expand_as(direction)
    d = direction * _write_factor(model, model.family.mlp_write, i, post @ rows + bias)
    return post.T * (rows @ d.T), (bias * d).sum(-1)


def _write_factor(model: HookedModel, post_norm: str | None, i: int, pre: Tensor) -> Tensor:
    """What the layer multiplies a projection's output [batch d_model] by before adding it.

    Granite's residual multiplier, and a post-norm (RMSNorm) with its divisor frozen at this run's
    value ``sqrt(mean(pre^2) + eps)``; 1 otherwise.
    """
    factor = torch.full_like(pre, model.dims.residual_scale)
    if post_norm is None:
        return factor
    norm = model.block(i).get_submodule(post_norm)
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
    scale = (pre.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return factor * (norm.weight.float() + model.family.norm_offset) / scale
