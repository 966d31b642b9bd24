"""The sections of the HTML report, in order, registered in :data:`SECTIONS`.

A section is ``fn(model, ctx) -> HTML fragment``: it runs an analysis, records JSON-ready numbers
in ``ctx.data`` and renders them with a template of ``mechscope/viz/templates/report/``
(:func:`mechscope.viz.render`). Add a section by writing such a
function and appending it to ``SECTIONS``. Sections run under ``torch.no_grad()``.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from mechscope.lenses import logit_lens
from mechscope.models.hooked import HookedModel
from mechscope.report.attention_section import attention_section
from mechscope.report.circuit_section import circuit_section
from mechscope.report.context import ReportContext, Section
from mechscope.report.features_section import features_section
from mechscope.report.heads_section import heads_section
from mechscope.report.lens_section import tuned_lens_section
from mechscope.report.neurons_section import neurons_section
from mechscope.report.sae_section import sae_section
from mechscope.viz import lens_table, lens_target_figure, render, save_png
from mechscope.viz.html import figure_uri

__all__ = ["SECTIONS", "logit_lens_section", "model_card", "predictions"]


def _decode(model: HookedModel, token_id: int) -> str:
    return model.tokenizer.decode([int(token_id)])


def model_card(model: HookedModel, ctx: ReportContext) -> str:
    """Family, dimensions, parameter count, provenance and number of hook points."""
    dims = dataclasses.asdict(model.dims)
    n_params = sum(p.numel() for p in model.hf.parameters())
    card = {
        "family": model.family.name,
        "model_type": getattr(model.hf.config, "model_type", None),
        "parameters": n_params,
        "hook_points": len(model.sites),
        "dtype": str(next(model.hf.parameters()).dtype).removeprefix("torch."),
    }
    ctx.data["model"] = {**card, "dims": dims, "provenance": model.provenance}
    return render("report/model_card.html.j2", card=card, dims=dims, provenance=model.provenance)


def predictions(model: HookedModel, ctx: ReportContext) -> str:
    """The top-k next tokens, with probabilities, for each prompt (one batched forward)."""
    prompts, k = list(ctx.config.prompts), ctx.config.top_k
    tokens, mask = model.tokenize(prompts)
    logits = model(tokens, attention_mask=mask)  # [batch pos d_vocab]
    last = (mask.sum(1) - 1).to(logits.device)
    probs = logits[torch.arange(len(prompts)), last].float().softmax(-1)  # [batch d_vocab]
    top = probs.topk(min(k, probs.shape[-1]), dim=-1)
    record = []
    for prompt, ids, ps in zip(prompts, top.indices.tolist(), top.values.tolist(), strict=True):
        words = [_decode(model, i) for i in ids]
        top_k = [{"id": i, "token": w, "prob": p} for i, w, p in zip(ids, words, ps, strict=True)]
        record.append({"prompt": prompt, "top": top_k})
    ctx.data["predictions"] = record
    return render("report/predictions.html.j2", record=record, k=top.indices.shape[1])


def _lens_target(model: HookedModel, tokens: torch.Tensor, text: str | None) -> tuple[int, str]:
    """The token id the lens tracks and a note on how it was chosen."""
    if text is not None:
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            return ids[0], "the expected answer"
    top = int(model(tokens)[0, -1].argmax())
    why = "the model's own top prediction"
    return top, why if text is None else f"{why} ({text!r} is not a single token)"


def logit_lens_section(model: HookedModel, ctx: ReportContext) -> str:
    """Top-1 token per layer at the last positions of one prompt, and the target by layer."""
    cfg = ctx.config
    tokens = model.to_tokens(cfg.lens_prompt)
    target, why = _lens_target(model, tokens, cfg.lens_target)
    last = range(-min(cfg.lens_positions, tokens.shape[1]), 0)
    result = logit_lens(model, tokens, target=target, top_k=cfg.top_k, positions=last)
    str_tokens = model.to_str_tokens(tokens[0])
    label = repr(_decode(model, target))
    ctx.data["logit_lens"] = {
        "prompt": cfg.lens_prompt,
        "str_tokens": str_tokens,
        **result.to_dict(),
    }
    fig = lens_target_figure(result, label)
    save_png(fig, ctx.out_dir / "logit_lens_target.png")
    decode = functools.partial(_decode, model)
    return render(
        "report/logit_lens.html.j2",
        prompt=cfg.lens_prompt,
        top_k=cfg.top_k,
        label=label,
        why=why,
        table=lens_table(result, str_tokens, decode, last=cfg.lens_positions),
        figure=figure_uri(fig),
    )


SECTIONS: list[Section] = [
    Section("Model", model_card),
    Section("Next-token predictions", predictions),
    Section("Logit lens", logit_lens_section),
    Section("Tuned lens", tuned_lens_section),
    Section("Head detectors", heads_section),
    Section("Attention", attention_section),
    Section("Circuit", circuit_section),
    Section("Neurons", neurons_section),
    Section("Sparse autoencoder", sae_section),
    Section("Feature database", features_section),
]
