"""Training a crosscoder on a base model and its finetune, and reading it against a planted truth.

Steps of :func:`train_crosscoder`:

1. harvest the site (:func:`crosscoder_site`: ``blocks.{layer}.hook_resid_post`` by default, or
   another hook of width ``d_model`` such as ``blocks.{layer}.hook_mlp_out``) of each model on the
   same corpus windows into
   ``OUT/acts-base`` and ``OUT/acts-finetuned`` (:func:`mechscope.activations.harvest`: resumable,
   atomic shards; equal settings give the same rows in the same order);
2. batches: the two stores read with one seed, each half multiplied by its own factor (unit mean
   squared norm of the rows minus their mean; ``b_dec`` starts at the scaled means), concatenated
   ``[x_base | x_ft]``;
3. :func:`mechscope.sae.fit` with checkpoints in ``OUT/checkpoints`` (resume after a crash; the
   folder is locked while it trains), then ``save_sae(OUT)`` and ``OUT/crosscoder.json``.

:func:`evaluate_crosscoder` reads a corpus through the crosscoder and reports the latents of each
band of the relative decoder norm, the latent-scaling ratios of the finetune-only latents and,
given planted spans, the precision and recall of each finetune-only latent firing on them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.activations import harvest
from mechscope.compare.run import site_activations
from mechscope.corpus import Corpus, load_corpus
from mechscope.diff.crosscoder import (
    CrosscoderInfo,
    activation_scores,
    classify,
    firing_scores,
    latent_scaling,
    make_crosscoder,
    relative_norms,
)
from mechscope.diff.kl import check_pair, doc_windows
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.sae import SAE, TrainConfig, TrainResult, fit, save_sae
from mechscope.sae.checkpoint import clear_checkpoints
from mechscope.sites.table import unknown_site_error

__all__ = [
    "crosscoder_inputs",
    "crosscoder_site",
    "evaluate_crosscoder",
    "paired_batches",
    "train_crosscoder",
]

SITE = "hook_resid_post"  # the default site: the residual stream after the layer


def check_widths(base: HookedModel, finetuned: HookedModel) -> None:
    if base.dims.d_model != finetuned.dims.d_model:
        raise MechscopeError(
            f"a crosscoder needs two models of one width (d_model {base.dims.d_model} vs "
            f"{finetuned.dims.d_model}); compare models of other widths with mechscope compare"
        )


def crosscoder_site(model: HookedModel, layer: int | None, site: str = SITE) -> tuple[int, str]:
    """The layer and full hook name a crosscoder reads: ``site`` is a hook of a block, either in
    full (``blocks.15.hook_mlp_out``; ``layer`` None or the same) or without its block
    (``hook_mlp_out``, at ``layer``). It must give one vector of width ``d_model`` per token (the
    residual stream, an attention or MLP output), as both halves of a crosscoder are read as
    ``d_model``-wide model activations."""
    head, _, rest = site.partition(".")
    if head == "blocks":
        number, _, _ = rest.partition(".")
        if not number.isdigit():
            raise MechscopeError(f"crosscoder site {site!r} names no layer; use blocks.L.hook_...")
        if layer is not None and layer != int(number):
            raise MechscopeError(
                f"crosscoder site {site} is at layer {number}, not the layer {layer} given; "
                "give one of them"
            )
        layer, name = int(number), site
    else:
        if layer is None:
            raise MechscopeError(
                f"crosscoder site {site!r} needs a layer (or name it blocks.L.{site})"
            )
        name = f"blocks.{layer}.{site}"
    if not 0 <= layer < model.dims.n_layers:
        raise MechscopeError(f"layer must lie in [0, {model.dims.n_layers}), got {layer}")
    if name not in model.sites:
        raise unknown_site_error(name, model.sites)
    shape = model.sites[name].shape(model.dims)
    if tuple(shape) != ("batch", "pos", model.dims.d_model):
        raise MechscopeError(
            f"a crosscoder reads one vector of width d_model ({model.dims.d_model}) per token; "
            f"{name} has shape [{', '.join(map(str, shape))}]: "
            "use hook_resid_pre/mid/post, hook_attn_out or hook_mlp_out"
        )
    return layer, name


def centred_scales(store: Any, max_rows: int = 65_536) -> tuple[Tensor, float]:
    """A store's mean activation and the factor that gives its *centred* rows unit mean squared
    norm (over at most ``max_rows`` rows, in the store's order)."""
    n = 0
    rows = []
    for batch in store.batches(4096, seed=0, shuffle=False):
        rows.append(batch.double())
        n += batch.shape[0]
        if n >= max_rows:
            break
    x = torch.cat(rows)[:max_rows]
    mean = x.mean(0)
    sq = float((x - mean).pow(2).sum(-1).mean())
    if not sq > 0:
        raise MechscopeError(f"the activations in {store.folder} do not vary; harvest more text")
    return mean.float(), sq**-0.5


def paired_batches(
    stores: Sequence[Any], batch_size: int, seed: int, scales: Sequence[float]
) -> Iterator[Tensor]:
    """``[batch 2d]`` batches: the rows of both stores side by side, each times its factor."""
    its = [s.batches(batch_size, seed=seed, loop=True, drop_last=True) for s in stores]
    for a, b in zip(*its, strict=False):
        yield torch.cat([a * scales[0], b * scales[1]], dim=-1)


def train_crosscoder(
    base: HookedModel,
    finetuned: HookedModel,
    out: str | Path,
    *,
    layer: int | None = None,
    site: str = SITE,
    corpus: Corpus | str | None = None,
    variant: str = "batchtopk",
    expansion: int = 8,
    k: int = 16,
    n_tokens: int = 50_000,
    batch_size: int = 1024,
    lr: float = 4e-4,
    seq_len: int = 128,
    seed: int = 0,
    steps: int | None = None,
    quiet: bool = False,
) -> tuple[SAE, CrosscoderInfo, TrainResult]:
    """Harvest both models at ``site`` (:func:`crosscoder_site`), train a crosscoder, save it to
    ``out`` (see module doc)."""
    check_pair(base, finetuned)
    check_widths(base, finetuned)
    layer, site = crosscoder_site(base, layer, site)
    corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    folder = Path(out)
    kw = {"seq_len": min(seq_len, base.dims.n_ctx), "batch_size": 8, "seed": seed}
    stores = [
        harvest(m, site, corpus, n_tokens, folder / name, progress=not quiet, **kw)
        for m, name in ((base, "acts-base"), (finetuned, "acts-finetuned"))
    ]
    d = base.dims.d_model
    names = {k_: str(v.provenance.get("name", "")) for k_, v in (("b", base), ("f", finetuned))}
    sae = make_crosscoder(variant, d, expansion * d, k=k, hook_name=site, seed=seed)
    # Each model's rows are scaled so that their part that varies (the rows minus the mean) has
    # unit mean squared norm, and b_dec starts at the scaled means. Scaling the raw rows instead
    # lets a large constant direction (most of the residual's norm in small models) set the
    # factor, and a model whose rows vary little then barely counts in the loss.
    moments = [centred_scales(s_) for s_ in stores]
    scales = [m[1] for m in moments]
    with torch.no_grad():
        sae.b_dec.copy_(torch.cat([m[0] * f for m, f in zip(moments, scales, strict=True)]))
    steps = steps or n_tokens // batch_size  # more steps than one pass: the stores loop
    if steps < 1:
        raise MechscopeError(f"--tokens {n_tokens} is less than one batch of {batch_size}")
    cfg = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=max(1, steps // 100),
        sparsity_warmup_steps=steps // 20 if variant == "l1" else 0,
        seed=seed,
        checkpoint_every=max(1, steps // 10),
        log_every=max(1, min(50, steps // 20)),
    )
    result = fit(
        sae,
        paired_batches(stores, batch_size, seed, scales),
        cfg,
        checkpoint_dir=folder / "checkpoints",
        progress=not quiet,
    )
    info = CrosscoderInfo(variant, d, layer, site, scales[0], scales[1], names["b"], names["f"])
    save_sae(sae, folder)
    info.save(folder)
    clear_checkpoints(folder / "checkpoints")
    return sae, info, result


@torch.no_grad()
def crosscoder_inputs(
    base: HookedModel,
    finetuned: HookedModel,
    info: CrosscoderInfo,
    corpus: Corpus,
    n_tokens: int,
    seq_len: int = 128,
    split: str = "all",
) -> tuple[Tensor, list[Any]]:
    """Scaled ``[n 2d]`` crosscoder inputs at the crosscoder's own hook (``info.hook_name``) over
    the corpus's windows (position 0 left out) and the windows (for the planted mask)."""
    rows, windows = [], []
    for window, _ in doc_windows(corpus, base.tokenizer, seq_len, n_tokens, split):
        a, _ = site_activations(base, [window.ids], [info.hook_name])
        b, _ = site_activations(finetuned, [window.ids], [info.hook_name])
        rows.append(
            torch.cat([a[0, 1:, 0] * info.scale_base, b[0, 1:, 0] * info.scale_finetuned], -1)
        )
        windows.append(window)
    return torch.cat(rows), windows


@torch.no_grad()
def evaluate_crosscoder(
    sae: SAE,
    info: CrosscoderInfo,
    base: HookedModel,
    finetuned: HookedModel,
    corpus: Corpus | str | None = None,
    *,
    spans: dict[int, list[tuple[int, int]]] | None = None,
    n_tokens: int = 10_000,
    seq_len: int = 128,
    split: str = "all",
    top: int = 10,
) -> dict[str, Any]:
    """Read ``corpus`` through the crosscoder. Latents that never fire on it are left out.

    Returns the band sizes of the relative decoder norm, the ``top`` latents of the finetune-only
    band and the ``top`` most finetune-leaning latents (both by relative norm, largest first) with
    their latent-scaling ratios and, with ``spans`` (planted character spans per
    document of ``split``), the precision and recall of each one firing on the planted tokens and
    the latent that finds them best (highest F1) with its rank by relative norm.
    """
    corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    sae = sae.eval()
    delta = relative_norms(sae)
    x, windows = crosscoder_inputs(base, finetuned, info, corpus, n_tokens, seq_len, split)
    latents = sae.encode(x)
    alive = (latents > 0).any(0)
    bands = classify(delta.masked_fill(~alive, float("nan")))
    order = delta.masked_fill(~alive, -1.0).argsort(descending=True)
    rank = {int(j): r for r, j in enumerate(order[: int(alive.sum())].tolist())}
    planted = _planted(windows, spans) if spans is not None else None
    listed = {
        "finetune_only": sorted(bands["finetune-only"], key=lambda j: -float(delta[j]))[:top],
        "most_finetune": [int(j) for j in order[:top].tolist() if alive[j]],
    }
    if planted is not None:
        f1 = [
            firing_scores(latents[:, j] > 0, planted)["f1"] if alive[j] else -1.0
            for j in range(sae.cfg.d_sae)
        ]
        listed["best_planted"] = [max(range(len(f1)), key=f1.__getitem__)]
    # one pass of the crosscoder over x for every listed latent
    scaling = latent_scaling(sae, x, sorted({j for js in listed.values() for j in js}))

    def row(j: int) -> dict[str, Any]:
        out: dict[str, Any] = {"latent": j, "delta": float(delta[j]), "rank": rank[j]}
        out.update(scaling[j])
        if planted is not None:
            out.update(activation_scores(latents[:, j], planted))
        return out

    report: dict[str, Any] = {
        "n_tokens": int(x.shape[0]),
        "d_sae": sae.cfg.d_sae,
        "alive": int(alive.sum()),
        "bands": {name: len(idx) for name, idx in bands.items()},
        "finetune_only": [row(j) for j in listed["finetune_only"]],
        "most_finetune": [row(j) for j in listed["most_finetune"]],
        "relative_norm": delta.tolist(),
    }
    if planted is not None:
        report["planted_tokens"] = int(planted.sum())
        report["best_planted"] = row(listed["best_planted"][0])
    return report


def _planted(windows: list[Any], spans: dict[int, list[tuple[int, int]]]) -> Tensor:
    flags = []
    for w in windows:
        doc_spans = spans.get(w.doc, ())
        flags += [any(a < e <= b for a, b in doc_spans) for e in w.ends[1:]]
    return torch.tensor(flags, dtype=torch.bool)
