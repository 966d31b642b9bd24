"""The activation-difference lens (Minder et al. 2025, "Narrow finetuning leaves clearly readable
traces in activation differences").

Steps of :func:`difference_lens`:

1. on the same windows of a corpus, the residual stream after every block of both models; the
   mean over tokens of ``finetuned - base`` at each layer, ``delta[L]`` (streamed; position 0 is
   left out: its residual is the attention sink's outlier);
2. each ``delta[L]`` read through the logit lens (the base model's final norm and unembedding):
   the tokens the difference promotes;
3. optionally, through an SAE at a layer: the latents whose decoder rows are closest in cosine;
4. :func:`steer_test` adds ``scale * delta[L]`` to the base model's residual at every position
   and measures the log-probability of a behaviour's continuation (the planted reply after its
   trigger) against the unsteered base: whether the difference carries the behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.compare.run import residuals
from mechscope.corpus import Corpus, load_corpus
from mechscope.diff.kl import check_pair, doc_windows
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.progress import progress
from mechscope.sites.readout import final_logits

__all__ = ["DifferenceLens", "difference_lens", "lens_tokens", "reply_logprob", "steer_test"]


@dataclass
class DifferenceLens:
    """``delta [layer d_model]``: mean ``finetuned - base`` residual after each block."""

    delta: Tensor
    n_tokens: int

    def norms(self) -> list[float]:
        return self.delta.norm(dim=-1).tolist()


@torch.no_grad()
def difference_lens(
    base: HookedModel,
    finetuned: HookedModel,
    corpus: Corpus | str | None = None,
    *,
    n_tokens: int = 20_000,
    seq_len: int = 128,
    batch_size: int = 8,
    split: str = "all",
    quiet: bool = False,
) -> DifferenceLens:
    """The mean activation difference at every layer over ``n_tokens`` tokens of ``corpus``."""
    check_pair(base, finetuned)
    if base.dims.d_model != finetuned.dims.d_model or base.dims.n_layers != finetuned.dims.n_layers:
        raise MechscopeError("the difference lens needs two models of the same shape")
    corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    layers = list(range(base.dims.n_layers))
    total = torch.zeros(len(layers), base.dims.d_model, dtype=torch.float64)
    count = 0
    batch: list[list[int]] = []
    bar = progress(None, total=n_tokens, desc="difference lens", quiet=quiet, unit="tok")

    def run(ids: list[list[int]]) -> int:
        a, mask = residuals(base, ids, layers)
        b, _ = residuals(finetuned, ids, layers)
        keep = mask.bool().clone()
        keep[:, 0] = False
        total.add_((b - a)[keep].double().sum(0))
        bar.update(sum(len(i) for i in ids))
        return int(keep.sum())

    seq_len = min(seq_len, base.dims.n_ctx)
    for window, _ in doc_windows(corpus, base.tokenizer, seq_len, n_tokens, split):
        batch.append(window.ids)
        if len(batch) == batch_size:
            count += run(batch)
            batch = []
    if batch:
        count += run(batch)
    bar.close()
    if count == 0:
        raise MechscopeError("no tokens to average over; pass a corpus with longer documents")
    return DifferenceLens((total / count).float(), count)


@torch.no_grad()
def lens_tokens(model: HookedModel, delta: Tensor, k: int = 10) -> list[list[tuple[int, float]]]:
    """For each row of ``delta [layer d_model]``: the ``k`` tokens whose logits it raises most,
    ``(token id, logit)``, read through the model's final norm and unembedding."""
    logits = final_logits(model, delta.to(next(model.hf.parameters()).dtype)).float()
    top = logits.topk(k, dim=-1)
    return [
        list(zip(i.tolist(), v.tolist(), strict=True))
        for i, v in zip(top.indices, top.values, strict=True)
    ]


@torch.no_grad()
def sae_features(sae: Any, delta_row: Tensor, k: int = 10) -> list[tuple[int, float]]:
    """The SAE latents whose decoder rows point closest to ``delta_row`` (cosine), largest first."""
    w = sae.W_dec.detach().float()
    cos = (w @ delta_row.float()) / (w.norm(dim=-1) * delta_row.float().norm()).clamp_min(1e-12)
    top = cos.topk(min(k, cos.numel()))
    return list(zip(top.indices.tolist(), top.values.tolist(), strict=True))


@torch.no_grad()
def reply_logprob(
    model: HookedModel, prompts: Sequence[str], reply: str, hooks: Sequence[Any] = ()
) -> float:
    """Mean over prompts of ``log P(reply | prompt)`` (teacher-forced, summed over its tokens)."""
    tok = model.tokenizer
    reply_ids = tok(reply, add_special_tokens=False)["input_ids"]
    total = 0.0
    for prompt in prompts:
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        tokens = torch.tensor([ids + reply_ids])
        logp = model.run_with_hooks(tokens, fwd_hooks=list(hooks))[0].float().log_softmax(-1)
        picks = logp[len(ids) - 1 : -1].gather(-1, torch.tensor(reply_ids)[:, None])
        total += float(picks.sum())
    return total / len(prompts)


def add_hook(vector: Tensor, scale: float) -> Any:
    def hook(x: Tensor, hook: Any) -> Tensor:
        return x + scale * vector.to(x.dtype)

    return hook


def steer_test(
    base: HookedModel,
    delta: Tensor,
    prompts: Sequence[str],
    reply: str,
    *,
    layers: Sequence[int],
    scales: Sequence[float] = (1.0, 2.0, 4.0),
) -> dict[str, Any]:
    """``log P(reply | prompt)`` of the base model, unsteered and steered by ``scale * delta[L]``
    at ``blocks.L.hook_resid_post`` (every position), for each layer and scale."""
    if not prompts:
        raise MechscopeError("the steering test needs at least one prompt")
    baseline = reply_logprob(base, prompts, reply)
    rows = []
    for layer in layers:
        for scale in scales:
            hooks = [(f"blocks.{layer}.hook_resid_post", add_hook(delta[layer], scale))]
            steered = reply_logprob(base, prompts, reply, hooks)
            rows.append(
                {"layer": layer, "scale": scale, "logprob": steered, "gain": steered - baseline}
            )
    return {"baseline": baseline, "steered": rows, "best": max(rows, key=lambda r: r["gain"])}
