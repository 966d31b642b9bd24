"""Activation stores: harvest activations at model sites into sharded files, read training batches.

``harvest(model, sites, corpus, n_tokens, out_dir)`` streams a corpus through the model and writes
crash-safe safetensors shards plus ``manifest.json``; ``ActivationStore.open(dir)`` reads them back,
and ``store.batches(batch_size)`` yields shuffled training batches across shards. See
docs/activations.md.
"""

from mechscope.activations.harvest import DTYPES, harvest, model_fingerprint
from mechscope.activations.manifest import Manifest, ShardInfo, read_manifest
from mechscope.activations.reader import batches
from mechscope.activations.store import ActivationStore

__all__ = [
    "DTYPES",
    "ActivationStore",
    "Manifest",
    "ShardInfo",
    "batches",
    "harvest",
    "model_fingerprint",
    "read_manifest",
]
