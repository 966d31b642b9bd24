"""Evaluate an SAE or transcoder on a model: reconstruction, sparsity, and the spliced model's loss.

One pass over corpus windows. For each batch, three forwards share one token batch:

1. clean: the model as it is; the SAE's input site (and, for a transcoder, its output site) is
   cached;
2. spliced: the SAE's output replaces the activation it reconstructs (``hook_name`` for an SAE,
   ``out_hook_name`` for a transcoder);
3. zero: that same activation replaced by zeros.

Scores (as SAELens's evaluator names them where it has a name):

- ``l0``: mean number of active latents per token; ``mse``: mean squared error per element
  (model units); ``fvu``: fraction of variance unexplained, ``sum ||x - x_hat||^2 / sum ||x -
  mean(x)||^2`` over all tokens; ``explained_variance = 1 - fvu``; ``cos``: mean cosine similarity
  of reconstruction and target;
- ``dead_fraction``: latents that never fire on the evaluated tokens; ``dense_fraction``: latents
  firing on more than 10% of tokens; a histogram of log10 firing densities;
- ``ce_loss_clean``, ``ce_loss_spliced``, ``ce_loss_zero``: next-token cross-entropy (nats, mean
  over every predicted position); ``ce_loss_recovered = (zero - spliced) / (zero - clean)`` (1: the
  SAE loses nothing, 0: as bad as deleting the activation); ``kl``: mean KL(clean || spliced) per
  position.

The reconstruction and sparsity scores leave out each window's first position unless
``include_first=True`` (it is the attention-sink position, an outlier the harvest leaves out of
training data too, as SAELens leaves out BOS); the losses and KL are over the full forward.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from mechscope.corpus import Corpus, batches, load_corpus
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.progress import progress as progress_bar
from mechscope.sae.base import SAE

__all__ = ["DENSE_THRESHOLD", "SAEEval", "evaluate_sae", "sae_sites", "splice_hooks"]

DENSE_THRESHOLD = 0.1  # a latent firing on more than this share of tokens counts as dense


@dataclass
class SAEEval:
    """The scores of :func:`evaluate_sae` (keys of ``mechscope sae eval --json``)."""

    l0: float
    mse: float
    fvu: float
    explained_variance: float
    cos: float
    dead_fraction: float
    dense_fraction: float
    ce_loss_clean: float
    ce_loss_spliced: float
    ce_loss_zero: float
    ce_loss_recovered: float
    kl: float
    n_tokens: int
    hook_name: str
    density_histogram: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sae_sites(model: HookedModel, sae: SAE) -> tuple[str, str]:
    """The sites the SAE reads and writes, checked against the model's sites and widths."""
    cfg = sae.cfg
    read, write = cfg.hook_name, cfg.out_hook_name or cfg.hook_name
    for name in (read, write):
        if name not in model.sites:
            raise MechscopeError(
                f"the SAE's site {name!r} is not a hook point of this model; "
                "check the SAE's hook_name (mechscope info MODEL lists the sites)"
            )
    width = model.sites[read].shape(model.dims)[-1]
    if width != cfg.d_in:
        raise MechscopeError(
            f"wrong SAE dimensions: {read} has d={width}, the SAE expects d_in={cfg.d_in}"
        )
    width = model.sites[write].shape(model.dims)[-1]
    if width != cfg.width_out:
        raise MechscopeError(
            f"wrong SAE dimensions: {write} has d={width}, the SAE writes d={cfg.width_out}"
        )
    return read, write


def splice_hooks(sae: SAE, read: str, write: str) -> list:
    """Forward hooks that replace ``write``'s activation by the SAE's reconstruction of ``read``."""
    seen: dict[str, Tensor] = {}

    def grab(x: Tensor, hook: Any) -> None:
        seen["in"] = x

    def replace(x: Tensor, hook: Any) -> Tensor:
        source = x if read == write else seen.pop("in")
        return sae(source.to(sae.W_dec.dtype)).x_hat.to(x.dtype)

    return [(write, replace)] if read == write else [(read, grab), (write, replace)]


def _ce(logits: Tensor, tokens: Tensor) -> Tensor:
    """Per-position next-token cross-entropy [batch pos-1]."""
    logp = logits[:, :-1].float().log_softmax(-1)
    return -logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)


@torch.no_grad()
def evaluate_sae(
    model: HookedModel,
    sae: SAE,
    corpus: Corpus | str | None = None,
    *,
    n_tokens: int = 16_384,
    seq_len: int = 128,
    batch_size: int = 8,
    seed: int = 0,
    split: str = "test",
    include_first: bool = False,
    progress: bool = True,
) -> SAEEval:
    """Score ``sae`` on ``n_tokens`` tokens of held-out corpus text (see the module docstring)."""
    corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    read, write = sae_sites(model, sae)
    sae = sae.eval()
    sums: dict[str, float] = dict.fromkeys(("ce0", "ce1", "ce2", "kl", "sq", "l0", "cos"), 0.0)
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    moments = [0.0, None]  # sum of squared norms, sum of vectors (for the variance)
    n_tok = n_pred = n_all = 0
    first = 0 if include_first else 1
    windows = batches(
        corpus, model.tokenizer, batch_size=batch_size, seq_len=seq_len, n_tokens=n_tokens,
        seed=seed, split=split,
    )  # fmt: skip
    n_batches = -(-n_tokens // (batch_size * seq_len))
    for tokens in progress_bar(
        windows, n_batches, desc="sae eval", quiet=not progress, unit="batch"
    ):
        logits, cache = model.run_with_cache(tokens, names=sorted({read, write}))
        x, target = cache[read].float(), cache[write].float()
        out = sae(x.to(sae.W_dec.dtype))
        x_hat = out.x_hat.float()
        _accumulate(
            sums, moments, fired, target[:, first:], x_hat[:, first:], out.latents[:, first:]
        )
        spliced = model.run_with_hooks(tokens, fwd_hooks=splice_hooks(sae, read, write))
        zero = model.run_with_hooks(
            tokens, fwd_hooks=[(write, lambda a, hook: torch.zeros_like(a))]
        )
        sums["ce0"] += float(_ce(logits, tokens).sum())
        sums["ce1"] += float(_ce(spliced, tokens).sum())
        sums["ce2"] += float(_ce(zero, tokens).sum())
        lp, lq = logits.float().log_softmax(-1), spliced.float().log_softmax(-1)
        sums["kl"] += float((lp.exp() * (lp - lq)).sum())
        n_tok += tokens[:, first:].numel()
        n_all += tokens.numel()
        n_pred += tokens.shape[0] * (tokens.shape[1] - 1)
    sums["kl"] *= n_tok / max(n_all, 1)  # _scores divides by n_tok: make it a mean over n_all
    return _scores(sums, moments, fired, n_tok, n_pred, sae, write)


def _accumulate(
    sums: dict[str, float],
    moments: list,
    fired: Tensor,
    target: Tensor,
    x_hat: Tensor,
    latents: Tensor,
) -> None:
    flat, rec = target.reshape(-1, target.shape[-1]), x_hat.reshape(-1, x_hat.shape[-1])
    if torch.isnan(flat).any():
        raise MechscopeError("NaN in the model's activations at the SAE site; check the model")
    sums["sq"] += float((flat - rec).pow(2).sum())
    sums["cos"] += float(torch.nn.functional.cosine_similarity(flat, rec, dim=-1).sum())
    active = latents.reshape(-1, latents.shape[-1]) != 0
    sums["l0"] += float(active.sum())
    fired += active.sum(0).cpu()
    moments[0] += float(flat.pow(2).sum())
    moments[1] = flat.sum(0) if moments[1] is None else moments[1] + flat.sum(0)


def _scores(
    sums: dict[str, float],
    moments: list,
    fired: Tensor,
    n_tok: int,
    n_pred: int,
    sae: SAE,
    site: str,
) -> SAEEval:
    if n_tok == 0:
        raise MechscopeError(
            "no corpus windows to evaluate on; use a larger corpus or shorter windows"
        )
    width = sae.cfg.width_out
    variance = moments[0] - float(moments[1].pow(2).sum()) / n_tok  # sum ||x - mean||^2
    fvu = sums["sq"] / variance if variance > 0 else float("nan")
    ce_clean, ce_sae, ce_zero = (sums[k] / n_pred for k in ("ce0", "ce1", "ce2"))
    gap = ce_zero - ce_clean
    density = fired.double() / n_tok
    log_density = torch.log10(density[density > 0]).tolist()
    counts, edges = _histogram(log_density)
    return SAEEval(
        l0=sums["l0"] / n_tok,
        mse=sums["sq"] / (n_tok * width),
        fvu=fvu,
        explained_variance=1 - fvu,
        cos=sums["cos"] / n_tok,
        dead_fraction=float((fired == 0).double().mean()),
        dense_fraction=float((density > DENSE_THRESHOLD).double().mean()),
        ce_loss_clean=ce_clean,
        ce_loss_spliced=ce_sae,
        ce_loss_zero=ce_zero,
        ce_loss_recovered=(ce_zero - ce_sae) / gap if gap != 0 else float("nan"),
        kl=sums["kl"] / n_tok,
        n_tokens=n_tok,
        hook_name=site,
        density_histogram={"log10_density_edges": edges, "counts": counts},
    )


def _histogram(values: Iterable[float], bins: int = 20) -> tuple[list[float], list[float]]:
    values = torch.tensor(list(values), dtype=torch.float64)
    if values.numel() == 0:
        return [], []
    counts, edges = torch.histogram(values, bins=bins, range=(-8.0, 0.0))
    return counts.tolist(), edges.tolist()
