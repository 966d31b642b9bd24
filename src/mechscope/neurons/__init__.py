"""Neurons and directions: max-activating corpus windows, histograms and logit effects.

``scan_corpus(model, mlp_neurons(model, layer))`` reads every MLP neuron of a layer in one
streaming pass over a corpus (:mod:`.scan`); :func:`head_outputs` and :func:`residual_directions`
read attention-head outputs and residual-stream directions the same way. See docs/neurons.md.
"""

from mechscope.neurons.export import scan_to_dict, unit_positions
from mechscope.neurons.histogram import Histogram
from mechscope.neurons.logits import LogitEffects, logit_effects
from mechscope.neurons.readouts import Readout, head_outputs, mlp_neurons, residual_directions
from mechscope.neurons.scan import NeuronScan, capture_site, scan, scan_corpus
from mechscope.neurons.topk import TopK

__all__ = [
    "Histogram",
    "LogitEffects",
    "NeuronScan",
    "Readout",
    "TopK",
    "capture_site",
    "head_outputs",
    "logit_effects",
    "mlp_neurons",
    "residual_directions",
    "scan",
    "scan_corpus",
    "scan_to_dict",
    "unit_positions",
]
