"""The report's neuron section: the top corpus windows of a few neurons of one middle layer.

Steps (library calls; the section only renders): one streaming pass of
:func:`mechscope.neurons.scan_corpus` over ``TOKENS`` tokens of the built-in corpus for every MLP
neuron of layer ``n_layers // 2``, then the ``SHOW`` neurons with the largest maximum activation:
their top ``K`` windows with tokens shaded by activation, their activation histograms and the
tokens their down-projection rows promote and suppress through the unembedding. A model without
dense MLP neurons (mixture of experts) or a machine without the built-in corpus gets a note.
"""

from __future__ import annotations

from typing import Any

from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.report.context import ReportContext
from mechscope.viz import Markup, escape

__all__ = ["neurons_section"]

TOKENS = 16_384  # corpus tokens scanned (256 windows of 64): ~25 CPU-seconds on SmolLM2
SEQ_LEN = 64
K = 5  # windows shown per neuron
SHOW = 4  # neurons shown
SUMMARY_ROWS = 12


def neurons_section(model: HookedModel, ctx: ReportContext, corpus: Any = None) -> str:
    """Top windows, histograms and logit effects of the strongest neurons of a middle layer."""
    from mechscope.neurons import mlp_neurons, scan_corpus, scan_to_dict
    from mechscope.neurons.render import STYLE, layer_summary, neuron_block

    layer = model.dims.n_layers // 2
    corpus = corpus if corpus is not None else ctx.config.corpus
    try:
        readout = mlp_neurons(model, layer)
        seq_len = min(SEQ_LEN, model.dims.n_ctx)
        result = scan_corpus(model, readout, corpus, n_tokens=TOKENS, seq_len=seq_len, k=K)
    except MechscopeError as exc:
        ctx.data["neurons"] = {"skipped": str(exc)}
        return Markup(f'<p class="note">Skipped: {escape(exc)}</p>')
    data = scan_to_dict(result, model.tokenizer, show=result.ranked(SHOW))
    data["summary"] = sorted(data["summary"], key=lambda s: -s["max"])[:SUMMARY_ROWS]
    ctx.data["neurons"] = data
    intro = (
        f"{STYLE}<p>Every MLP neuron of layer {layer} (<code>{escape(data['site'])}</code>) over "
        f"{data['tokens']:,} tokens of the corpus ({data['windows']} windows of {data['seq_len']}"
        "; each window's first position, the attention sink, left out of the statistics and the "
        f"ranking), in one streaming pass. Shown: the {SHOW} neurons with the largest maximum "
        f"activation, each with its top {K} windows (tokens shaded by the neuron's activation, "
        "orange positive, blue negative; hover for the value; the maximum is outlined), its "
        "activation histogram (log counts) and the tokens its output weights promote and "
        f"suppress ({escape(data['logit_unit'])}). Run <code>mechscope neurons</code> for "
        "any layer, more tokens and more neurons.</p>"
    )
    blocks = "".join(neuron_block(entry) for entry in data["neurons"])
    return Markup(intro + layer_summary(data, SUMMARY_ROWS) + blocks)
