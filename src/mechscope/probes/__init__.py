"""Probing classifiers: which sites linearly encode a label, and how selectively.

Every probe kind is one file with the signature ``fit(x, y, n_classes, *, weight_decay) ->
LinearClassifier`` and is listed in :data:`PROBES`; built-in labelled sets are listed in
:data:`PROBE_SETS`. :func:`probe` harvests activations and scores a probe per site.
"""

from __future__ import annotations

from mechscope.probes.api import PROBES, ProbeResult, SiteScore, load_probe_data, probe, score_site
from mechscope.probes.base import LinearClassifier, accuracy
from mechscope.probes.data import ProbeData, from_rows, read_jsonl
from mechscope.probes.harvest import Harvest, harvest
from mechscope.probes.linear import fit_linear
from mechscope.probes.logistic import fit_logistic
from mechscope.probes.sets import PROBE_SETS
from mechscope.probes.splits import control_labels, stratified_folds, train_test_split

__all__ = [
    "PROBES",
    "PROBE_SETS",
    "Harvest",
    "LinearClassifier",
    "ProbeData",
    "ProbeResult",
    "SiteScore",
    "accuracy",
    "control_labels",
    "fit_linear",
    "fit_logistic",
    "from_rows",
    "harvest",
    "load_probe_data",
    "probe",
    "read_jsonl",
    "score_site",
    "stratified_folds",
    "train_test_split",
]
