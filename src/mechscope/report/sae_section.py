"""The report's SAE section: an SAE's scores on the model and the top corpus windows of a few latents.

Steps (library calls; the section only renders):

1. the SAE: the one given with ``mechscope report --sae DIR``, else a small TopK SAE on the
   residual stream after layer ``n_layers // 3``, trained once and cached in
   ``~/.cache/mechscope/sae/`` (harvest ``HARVEST_TOKENS`` tokens of the built-in corpus with
   :func:`mechscope.activations.harvest`, train ``STEPS`` steps with :func:`mechscope.sae.fit`;
   about two minutes for SmolLM2 on two cores, then loaded in a second);
2. its scores on held-out text (:func:`mechscope.sae.splice.evaluate_sae`): L0, FVU, dead latents,
   and the cross-entropy with the SAE spliced in versus clean and zero-ablated;
3. one streaming pass of :func:`mechscope.neurons.scan` over corpus windows reading every latent
   (:func:`mechscope.neurons.sae_latents`, in model units), each window's first position left
   out as in training, then ``SHOW`` latents picked by :func:`mechscope.neurons.pick_spread`
   (firing on 0.1%-5% of tokens, not tied to one position, spread over density quantiles) with
   their top windows and the tokens their decoder directions promote.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from mechscope.errors import MechscopeError
from mechscope.files import atomic_folder, cache_root
from mechscope.models.hooked import HookedModel
from mechscope.report.context import ReportContext
from mechscope.viz import Markup, render

__all__ = ["cached_sae", "sae_section"]

HARVEST_TOKENS = 131_072
STEPS = 600
BATCH = 1024
EXPANSION = 4
K = 32
EVAL_TOKENS = 4096
SCAN_TOKENS = 8192
SHOW = 4
DENSITY = (0.001, 0.05)


def cached_sae(model: HookedModel, site: str, corpus: Any = None, *, quiet: bool = True) -> Any:
    """The report's small TopK SAE at ``site``: loaded from the cache, or trained and cached."""
    from mechscope.activations import harvest, model_fingerprint
    from mechscope.corpus import load_corpus
    from mechscope.sae import SAE, SAEConfig, TrainConfig, fit, load_sae, save_sae

    corpus = corpus if corpus is not None and not isinstance(corpus, str) else load_corpus(corpus)
    key = f"{model_fingerprint(model)}-{corpus.fingerprint}-{site}-topk{K}-x{EXPANSION}"
    key += f"-{HARVEST_TOKENS}-{STEPS}-nofirst"  # trained without each window's first position
    folder = cache_root() / "sae" / key
    if folder.is_dir():
        try:
            return load_sae(folder)
        except MechscopeError:
            shutil.rmtree(folder, ignore_errors=True)  # damaged: train again
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".tmp-") as tmp:
        store = harvest(
            model, site, corpus, HARVEST_TOKENS, Path(tmp) / "acts", split="train",
            seq_len=min(128, model.dims.n_ctx),
            progress=not quiet,
        )  # fmt: skip
        d = model.dims.d_model
        cfg = SAEConfig(
            arch="topk", d_in=d, d_sae=EXPANSION * d, hook_name=site, k=K,
            normalize_scale=store.norm_scale, model_name=str(model.provenance.get("name", "")),
            dataset=corpus.name, include_first=store.manifest.include_first,
        )  # fmt: skip
        sae = SAE(cfg)
        train = TrainConfig(steps=STEPS, batch_size=BATCH, warmup_steps=STEPS // 20)
        with torch.enable_grad():  # reports run under no_grad
            fit(sae, store.batches(BATCH, loop=True, seed=0), train, progress=not quiet)
    with atomic_folder(folder) as out:  # a report that trained it first wins; use its copy
        save_sae(sae, out)
    return load_sae(folder)


def _load(model: HookedModel, ctx: ReportContext) -> tuple[Any, str]:
    from mechscope.sae import load_sae

    given = getattr(ctx.config, "sae", None)
    if given:
        return load_sae(given, model=model), ""
    site = f"blocks.{model.dims.n_layers // 3}.hook_resid_post"
    how = (
        f"a small TopK SAE (k={K}, {EXPANSION}x expansion) trained for this report on "
        f"{HARVEST_TOKENS:,} tokens of the built-in corpus ({STEPS} steps of {BATCH}; cached)"
    )
    return cached_sae(model, site, ctx.config.corpus), how


def sae_section(model: HookedModel, ctx: ReportContext) -> str:
    """Evaluation scores of an SAE on the model and the top windows of a few of its latents."""
    from mechscope.corpus import batches, load_corpus
    from mechscope.neurons import pick_spread, sae_latents, scan, scan_to_dict
    from mechscope.sae.splice import evaluate_sae
    from mechscope.viz.neurons import neuron_block

    try:
        sae, how = _load(model, ctx)
        corpus = ctx.config.corpus
        corpus = (
            corpus if corpus is not None and not isinstance(corpus, str) else load_corpus(corpus)
        )
        scores = evaluate_sae(
            model, sae, corpus, n_tokens=EVAL_TOKENS, seq_len=min(128, model.dims.n_ctx),
            split="test" if corpus.cache_tokens else "all", progress=False,
        )  # fmt: skip
        stream = batches(
            corpus, model.tokenizer, batch_size=16, seq_len=64, n_tokens=SCAN_TOKENS, seed=1
        )
        found = scan(model, sae_latents(sae), stream, k=5)
    except MechscopeError as exc:
        ctx.data["sae"] = {"skipped": str(exc)}
        return render("skipped.html.j2", reason=str(exc))
    picked = pick_spread(found, SHOW, density=DENSITY)
    data = scan_to_dict(found, model.tokenizer, show=picked.positions)
    shown = data["neurons"]
    record = scores.to_dict()
    ctx.data["sae"] = {"config": {k: v for k, v in vars(sae.cfg).items()}, "scores": record,
                       "picked": picked.rule, "logit_unit": data["logit_unit"],
                       "latents": shown}  # fmt: skip
    return render(
        "report/sae.html.j2",
        given=getattr(ctx.config, "sae", None),
        how=how,
        scores=record,
        cfg=sae.cfg,
        picked=picked.rule,
        n_eligible=picked.n_eligible,
        scan_tokens=found.n_tokens,
        n_shown=len(shown),
        logit_unit=data["logit_unit"],
        blocks=Markup("").join(neuron_block(entry, label="latent") for entry in shown),
    )
