"""One diff of a base model and its finetune, as ``mechscope diff`` runs it: :func:`diff_models`.

Steps: KL by token on the corpus (:mod:`mechscope.diff.kl`); the difference lens and its tokens
(:mod:`mechscope.diff.lens`), read through an SAE if one is given; with a known behaviour (a
folder of ``mechscope toy finetune``, or a prompt set and a reply), the KL scores against the
planted tokens and the steering test; optionally a crosscoder trained (or loaded) and read
(:mod:`mechscope.diff.crosscoder_train`). Everything goes into one JSON-ready dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechscope.corpus import Corpus
from mechscope.diff.kl import KLDiff, token_kl
from mechscope.diff.lens import difference_lens, lens_tokens, sae_features, steer_test
from mechscope.models.hooked import HookedModel
from mechscope.toys.finetune import Plant, planted_spans

__all__ = ["DiffOptions", "diff_models", "plant_prompts", "shown_documents"]


@dataclass(frozen=True)
class DiffOptions:
    """What :func:`diff_models` runs; the CLI's options."""

    n_tokens: int = 20_000
    seq_len: int = 128
    batch_size: int = 8
    lens: bool = True
    steer_layers: tuple[int, ...] | None = None  # None: the middle layer and the last
    steer_scales: tuple[float, ...] = (1.0, 2.0, 4.0)
    top: int = 20


def plant_prompts(corpus: Corpus, plant: Plant, most: int = 20) -> list[str]:
    """Prompts that end with a trigger: each planted document's text up to its first trigger."""
    prompts = []
    for doc in corpus.documents():
        spans = planted_spans(doc, plant)
        if spans:
            start = spans[0][0]
            trigger = next(t for t in plant.triggers if doc.startswith(t, start))
            prompts.append(doc[: start + len(trigger)])
        if len(prompts) >= most:
            break
    return prompts


def diff_models(
    base: HookedModel,
    finetuned: HookedModel,
    corpus: Corpus,
    opts: DiffOptions = DiffOptions(),
    *,
    plant: Plant | None = None,
    sae: Any = None,
    quiet: bool = False,
) -> tuple[dict[str, Any], KLDiff]:
    """KL by token and the difference lens; scored and steered when ``plant`` is known."""
    kw = {"n_tokens": opts.n_tokens, "seq_len": opts.seq_len, "batch_size": opts.batch_size}
    kl = token_kl(base, finetuned, corpus, quiet=quiet, **kw)
    payload: dict[str, Any] = {"corpus": corpus.name, "kl": kl.to_dict(base.tokenizer, opts.top)}
    if plant is not None:
        payload["plant"] = {"triggers": list(plant.triggers), "reply": plant.reply}
        spans = {d: planted_spans(t, plant) for d, t in kl.texts.items()}
        payload["kl"]["planted"] = kl.planted_scores(spans)
    if not opts.lens:
        return payload, kl
    lens = difference_lens(base, finetuned, corpus, quiet=quiet, **kw)
    decode = base.tokenizer.decode
    payload["lens"] = {
        "n_tokens": lens.n_tokens,
        "norms": lens.norms(),
        "tokens": [[decode([i]) for i, _ in row] for row in lens_tokens(base, lens.delta)],
    }
    if sae is not None:
        layer = _sae_layer(sae.cfg.hook_name)
        top = sae_features(sae, lens.delta[layer])
        payload["lens"]["sae_features"] = {
            "hook_name": sae.cfg.hook_name,
            "top": [{"latent": j, "cosine": c} for j, c in top],
        }
    if plant is not None:
        n = base.dims.n_layers
        layers = opts.steer_layers or tuple(sorted({n // 2, n - 1}))
        prompts = plant_prompts(corpus, plant)
        if prompts:
            payload["lens"]["steering"] = steer_test(
                base, lens.delta, prompts, plant.reply, layers=layers, scales=opts.steer_scales
            )
    return payload, kl


def _sae_layer(hook_name: str) -> int:
    from mechscope.errors import MechscopeError

    parts = hook_name.split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit() or "resid" not in hook_name:
        raise MechscopeError(
            f"the difference lens reads residual-stream SAEs; this one reads {hook_name!r}"
        )
    layer = int(parts[1]) - (parts[2] == "hook_resid_pre")  # delta[L] is resid_post of L
    if layer < 0:
        raise MechscopeError("the difference lens starts after block 0; use a later SAE")
    return layer


def shown_documents(kl: KLDiff, tokenizer: Any, plant: Plant | None, k: int = 5) -> list[dict]:
    """The ``k`` documents of largest mean KL, token by token, for the page."""
    out = []
    for doc, mean in kl.top_documents(k):
        spans = planted_spans(kl.texts[doc], plant) if plant is not None else []
        tokens = []
        for w in (w for w in kl.windows if w.doc == doc):
            for i, e, v in zip(w.ids, w.ends, w.kl, strict=True):
                planted = any(a < e <= b for a, b in spans)
                tokens.append({"text": tokenizer.decode([i]), "kl": v, "planted": planted})
        out.append({"doc": doc, "mean": mean, "tokens": tokens})
    return out


def default_corpus(finetuned: str) -> Path | None:
    """``eval.jsonl`` of a ``mechscope toy finetune`` folder, if ``finetuned`` is one."""
    path = Path(finetuned) / "eval.jsonl"
    return path if path.is_file() else None
