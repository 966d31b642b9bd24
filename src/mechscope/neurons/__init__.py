"""Neurons and directions: max-activating corpus windows, histograms and logit effects.

``scan_corpus(model, mlp_neurons(model, layer))`` reads every MLP neuron of a layer in one
streaming pass over a corpus (:mod:`.scan`); :func:`head_outputs`, :func:`residual_directions` and
:func:`sae_latents` read attention-head outputs, residual-stream directions and SAE latents the
same way; :func:`pick_spread` picks units worth showing. See docs/neurons.md.
"""

from mechscope.neurons.export import logit_unit, scan_to_dict, unit_positions
from mechscope.neurons.histogram import Histogram
from mechscope.neurons.logits import LogitEffects, logit_effects, norm_jacobian
from mechscope.neurons.pick import Picked, pick_spread, position_share
from mechscope.neurons.readouts import (
    Readout,
    head_outputs,
    mlp_neurons,
    residual_directions,
    sae_latents,
)
from mechscope.neurons.scan import NeuronScan, capture_site, final_residuals, scan, scan_corpus
from mechscope.neurons.topk import TopK

__all__ = [
    "Histogram",
    "LogitEffects",
    "NeuronScan",
    "Picked",
    "Readout",
    "TopK",
    "capture_site",
    "final_residuals",
    "head_outputs",
    "logit_effects",
    "logit_unit",
    "mlp_neurons",
    "norm_jacobian",
    "pick_spread",
    "position_share",
    "residual_directions",
    "sae_latents",
    "scan",
    "scan_corpus",
    "scan_to_dict",
    "unit_positions",
]
