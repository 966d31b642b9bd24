"""One streaming pass over a corpus for every unit of a readout: top windows and histograms.

Steps, per batch of token windows ``[batch seq_len]``:

1. run the model only up to the readout's site: a hook captures the activation and raises, so the
   later layers, the final norm and the unembedding never run (logits are never needed);
2. turn the activation into ``[batch pos unit]`` with the readout;
3. merge each window's maximum per unit into the running top-k (:mod:`.topk`) and add every
   value to the per-unit histograms (:mod:`.histogram`).

The first position of every window is left out of the ranking and the statistics unless
``include_first=True``: it is BOS when one is prepended, and otherwise the attention-sink
position, whose residual stream is an outlier (on SmolLM2 its final norm is about 6x the others);
SAELens and Neuronpedia leave BOS out likewise. Its activations stay in the kept windows' rows
for display. After the pass, the writes of the units go through the final norm, linearised at the
final residual streams of the first batch's first ``JACOBIAN_WINDOWS`` windows (the same positions
the statistics read), and the unembedding (:mod:`.logits`). Memory is the
model plus the top-k state (``~8 * unit * k * seq_len`` bytes), the histograms (``8 * unit * bins``)
and one batch's activations: it does not grow with the number of tokens. This is the approach of
Neuroscope (Nanda 2022) and of max-activating dataset examples generally (Olah et al. 2017).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.neurons.histogram import Histogram, empty_histogram, update_histogram
from mechscope.neurons.logits import JACOBIAN_POSITIONS, LogitEffects, logit_effects, norm_jacobian
from mechscope.neurons.readouts import Readout
from mechscope.neurons.topk import TopK, empty_topk, update_topk
from mechscope.progress import progress

Tensor = torch.Tensor

__all__ = [
    "JACOBIAN_WINDOWS",
    "NeuronScan",
    "capture_site",
    "final_residuals",
    "scan",
    "scan_corpus",
]

JACOBIAN_WINDOWS = 8  # windows of the first batch whose final residuals linearise the final norm


class _Captured(Exception):
    """Raised by the capturing hook to stop the forward pass once the site is read."""


@dataclass(frozen=True, eq=False)
class NeuronScan:
    """What one pass found for every unit of a readout."""

    readout: Readout
    top: TopK
    histogram: Histogram
    effects: LogitEffects | None  # None when the readout has no write vectors
    n_tokens: int  # tokens read (the statistics count ``histogram.n`` of them)
    n_windows: int
    seq_len: int
    include_first: bool = False  # whether the first position of each window was ranked and counted
    through_norm: bool = False  # whether the logit effects went through the final norm

    @property
    def max(self) -> Tensor:
        """[unit] the largest activation seen."""
        return self.histogram.hi

    def ranked(self, n: int | None = None) -> list[int]:
        """Positions (0..n_units-1) of the units with the largest maxima, best first."""
        order = torch.sort(self.max, descending=True, stable=True).indices
        return order[:n].tolist()

    def to_dict(
        self, tokenizer: Any, show: Sequence[int] | None = None, model: str = ""
    ) -> dict[str, Any]:
        """JSON-ready data (schema: :mod:`mechscope.neurons.export`); ``show`` lists positions
        in the scan shown in full (default: the 8 highest maxima). Pages render from it."""
        from mechscope.neurons.export import scan_to_dict

        return scan_to_dict(self, tokenizer, show, model)


def capture_site(model: HookedModel, site: str, tokens: Tensor) -> Tensor:
    """The activation at ``site`` for ``tokens`` [batch pos], stopping the forward right there."""
    store: dict[str, Tensor] = {}

    def grab(t: Tensor, hook: Any) -> None:
        store["t"] = t.detach()
        raise _Captured

    with torch.no_grad(), model.hooks(fwd=[(site, grab)]), contextlib.suppress(_Captured):
        model.forward(tokens)
    if "t" not in store:
        raise MechscopeError(f"the forward pass never reached {site}")
    return store["t"]


def scan(
    model: HookedModel,
    readout: Readout,
    batches: Iterable[Tensor],
    *,
    k: int = 20,
    bins: int = 64,
    n_logit_tokens: int = 10,
    through_norm: bool = True,
    include_first: bool = False,
    total: int | None = None,
    quiet: bool = True,
) -> NeuronScan:
    """Top-``k`` windows, histograms and logit effects of every unit over token ``batches``.

    ``batches`` yields ``[batch seq_len]`` token ids (e.g. :func:`mechscope.corpus.batches`);
    ``include_first`` ranks and counts each window's first position too; ``through_norm=False``
    skips the final norm in the logit effects; ``total`` (batches) only sizes the progress bar.
    """
    if k < 1 or bins < 2:
        raise MechscopeError(f"need k >= 1 and bins >= 2, got k={k}, bins={bins}")
    start = 0 if include_first else 1
    top: TopK | None = None
    resid: Tensor | None = None
    hist = empty_histogram(readout.n_units, bins)
    n_windows = seq_len = 0
    bar = progress(batches, total=total, desc=f"scan {readout.site}", quiet=quiet, unit="batch")
    for tokens in bar:
        tokens = torch.as_tensor(tokens)
        tokens = tokens[None] if tokens.ndim == 1 else tokens
        acts = readout.read(capture_site(model, readout.site, tokens)).float().cpu()
        if not torch.isfinite(acts).all():
            raise MechscopeError(f"non-finite activations at {readout.site}; check the model")
        if top is None:
            seq_len = _check_length(tokens.shape[1], start)
            top = empty_topk(readout.n_units, k, seq_len)
            if through_norm and readout.writes is not None:
                resid = final_residuals(model, tokens[:JACOBIAN_WINDOWS], start)
        elif tokens.shape[1] != seq_len:
            raise MechscopeError(
                f"every batch must have {seq_len} positions, got {tokens.shape[1]}; "
                "use fixed-length windows"
            )
        top = update_topk(top, acts, tokens, n_windows, start)
        hist = update_histogram(hist, acts[:, start:].reshape(-1, readout.n_units))
        n_windows += tokens.shape[0]
    if top is None:
        raise MechscopeError("no tokens to scan; the corpus gave no window")
    effects = None
    if readout.writes is not None:
        jacobian = None if resid is None else norm_jacobian(model, resid)
        effects = logit_effects(model, readout.writes, n_logit_tokens, jacobian=jacobian)
    n_tokens = n_windows * seq_len
    return NeuronScan(
        readout, top, hist, effects, n_tokens, n_windows, seq_len, include_first, resid is not None
    )


def _check_length(seq_len: int, start: int) -> int:
    if seq_len <= start:
        raise MechscopeError(
            "windows of one token have no position after the first; "
            "use longer windows or include_first=True"
        )
    return seq_len


def final_residuals(model: HookedModel, tokens: Tensor, start: int = 1) -> Tensor:
    """[n d_model] the final norm's input at positions ``start:`` of ``tokens`` [batch pos],
    at most ``JACOBIAN_POSITIONS`` of them, evenly spaced."""
    site = f"blocks.{model.dims.n_layers - 1}.hook_resid_post"
    resid = capture_site(model, site, tokens)[:, start:].float().cpu()
    resid = resid.reshape(-1, resid.shape[-1])
    step = max(1, -(-len(resid) // JACOBIAN_POSITIONS))
    return resid[::step]


def scan_corpus(
    model: HookedModel,
    readout: Readout,
    corpus: Any = None,
    *,
    n_tokens: int = 100_000,
    seq_len: int = 64,
    batch_size: int = 16,
    seed: int | None = 0,
    **kwargs: Any,
) -> NeuronScan:
    """:func:`scan` over ``n_tokens`` tokens of a corpus (a :class:`Corpus`, a spec or None)."""
    from mechscope.corpus import Corpus, batches, load_corpus

    if model.tokenizer is None:
        raise MechscopeError("scanning a corpus needs a model with a tokenizer")
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus)
    stream = batches(
        corpus,
        model.tokenizer,
        batch_size=batch_size,
        seq_len=seq_len,
        n_tokens=n_tokens,
        seed=seed,
    )
    total = -(-n_tokens // (seq_len * batch_size))
    return scan(model, readout, stream, total=total, **kwargs)
