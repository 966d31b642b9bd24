"""The sections of the HTML report, in order, registered in :data:`SECTIONS`.

A section is ``fn(model, ctx) -> HTML fragment``: it runs an analysis, records JSON-ready numbers
in ``ctx.data`` and renders them with :mod:`mechscope.viz`. Add a section by writing such a
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
from mechscope.report.heads_section import heads_section
from mechscope.report.lens_section import tuned_lens_section
from mechscope.report.neurons_section import neurons_section
from mechscope.report.sae_section import sae_section
from mechscope.viz import (
    Cell,
    Markup,
    escape,
    figure_img,
    heat_color,
    lens_table,
    lens_target_figure,
    save_png,
    show_token,
    table,
)

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
    rows = [(k.replace("_", " "), f"{v:,}" if isinstance(v, int) else v) for k, v in card.items()]
    return Markup(
        table(rows, ["model", ""])
        + "<h3>Dimensions</h3>"
        + table(list(dims.items()), ["dimension", "value"])
        + "<h3>Provenance</h3>"
        + table([(k, v) for k, v in model.provenance.items()] or [("source", "unknown")])
    )


def predictions(model: HookedModel, ctx: ReportContext) -> str:
    """The top-k next tokens, with probabilities, for each prompt (one batched forward)."""
    prompts, k = list(ctx.config.prompts), ctx.config.top_k
    tokens, mask = model.tokenize(prompts)
    logits = model(tokens, attention_mask=mask)  # [batch pos d_vocab]
    last = (mask.sum(1) - 1).to(logits.device)
    probs = logits[torch.arange(len(prompts)), last].float().softmax(-1)  # [batch d_vocab]
    top = probs.topk(min(k, probs.shape[-1]), dim=-1)
    rows, record = [], []
    for prompt, ids, ps in zip(prompts, top.indices.tolist(), top.values.tolist(), strict=True):
        words = [_decode(model, i) for i in ids]
        top_k = [{"id": i, "token": w, "prob": p} for i, w, p in zip(ids, words, ps, strict=True)]
        record.append({"prompt": prompt, "top": top_k})
        rows.append([prompt, *(_cell(w, p) for w, p in zip(words, ps, strict=True))])
    ctx.data["predictions"] = record
    header = ["prompt", *(f"#{i + 1}" for i in range(top.indices.shape[1]))]
    return table(rows, header)


def _cell(token: str, prob: float) -> Cell:
    return Cell(f"{show_token(token)} {prob:.2f}", heat_color(prob), f"{token!r} {prob:.4f}", "tok")


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
    intro = (
        f'<p>Prompt: <span class="tok">{escape(cfg.lens_prompt)}</span>. Each layer\'s residual '
        "stream (after the block) is read through the model's final norm and unembedding. A "
        "column is an input token; a cell is the top-1 guess for the token after it, shaded by "
        f"probability (hover for the top {cfg.top_k}). Tracked token: "
        f'<span class="tok">{escape(label)}</span>, {escape(why)}.</p>'
    )
    decode = functools.partial(_decode, model)
    table_html = lens_table(result, str_tokens, decode, last=cfg.lens_positions)
    return Markup(intro + table_html + figure_img(fig, f"probability and rank of {label}"))


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
]
