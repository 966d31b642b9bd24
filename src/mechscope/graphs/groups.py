"""Supernodes: features grouped automatically by the similarity of their edge profiles.

Each kept feature node gets a profile: its incoming and outgoing link weights over all kept
nodes, each half scaled to unit norm. Features whose profiles point the same way (cosine
distance below ``max_distance``, average linkage) form one group; groups of one are dropped.
The result uses circuit-tracer's ``qParams.supernodes`` form: ``[name, node_id, ...]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["auto_supernodes"]


def auto_supernodes(payload: dict[str, Any], max_distance: float = 0.3) -> list[list[str]]:
    """Groups of kept feature nodes with similar edge profiles (see the module doc)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    feats = [
        n["node_id"] for n in payload["nodes"] if n["feature_type"] == "cross layer transcoder"
    ]
    if len(feats) < 2:
        return []
    ids = [n["node_id"] for n in payload["nodes"]]
    col = {nid: i for i, nid in enumerate(ids)}
    row = {nid: i for i, nid in enumerate(feats)}
    inc, out = np.zeros((len(feats), len(ids))), np.zeros((len(feats), len(ids)))
    for link in payload["links"]:
        if link["target"] in row:
            inc[row[link["target"]], col[link["source"]]] = link["weight"]
        if link["source"] in row:
            out[row[link["source"]], col[link["target"]]] = link["weight"]
    for half in (inc, out):
        half /= np.maximum(np.linalg.norm(half, axis=1, keepdims=True), 1e-12)
    profile = np.concatenate([inc, out], axis=1)
    if not np.any(profile):
        return []
    labels = fcluster(linkage(profile, method="average", metric="cosine"), max_distance, "distance")
    groups: dict[int, list[str]] = {}
    for nid, label in zip(feats, labels):
        groups.setdefault(int(label), []).append(nid)
    members = [g for g in groups.values() if len(g) > 1]
    members.sort(key=lambda g: (int(g[0].split("_")[0]), g[0]))
    return [[f"group {i + 1}", *g] for i, g in enumerate(members)]
