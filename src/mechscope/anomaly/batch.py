"""Token scores of one batch for every kind and layer of a detector, and their combination.

Position 0 of every sequence is never scored (BOS when the tokenizer has one, else the
attention-sink position whose activations are outliers on every input); padding is not scored.
Across layers, a token's score at each layer is put on one scale by the held-out trusted tokens
(``z = (log s - mean) / std`` at that layer) and the combined score is the largest ``z``
(``combine="max"``) or the mean ``z`` over the layers (``combine="mean"``); the layer with the
largest ``z`` is the layer reported for the token.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from mechscope.anomaly.attention import token_terms
from mechscope.anomaly.detector import Detector
from mechscope.anomaly.dla import dla_width
from mechscope.anomaly.extract import BatchActs, extract
from mechscope.anomaly.kinds import KINDS, baseline_scores
from mechscope.anomaly.lens import lens_kl

__all__ = ["LOG_EPS", "batch_scores", "combine", "kind_input", "sites_for", "valid_mask"]

LOG_EPS = 1e-6


def sites_for(detector: Detector, kinds: tuple[str, ...]) -> list[str]:
    sites = []
    for kind in kinds:
        if KINDS[kind].reads in ("dla", "attention"):  # extract adds the sites they need
            continue
        if KINDS[kind].reads == "update":
            for layer in detector.kind_layers(kind):
                sites += [s for s in _update_sites(layer) if s not in sites]
            continue
        for layer in detector.kind_layers(kind):
            site = _site(detector, kind, layer)
            if site not in sites:
                sites.append(site)
        if KINDS[kind].reads == "lens" and _last_site(detector) not in sites:
            sites.append(_last_site(detector))
    return sites


def _last_site(detector: Detector) -> str:
    return f"blocks.{int(detector.model['n_layers']) - 1}.hook_resid_post"


def _update_sites(layer: int) -> tuple[str, str]:
    """The residual stream before and after block ``layer``: their difference is its update."""
    return f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.hook_resid_post"


def _site(detector: Detector, kind: str, layer: int) -> str:
    if kind == "sae":
        assert detector.sae is not None
        return str(detector.sae["site"])
    return detector.config.site.format(layer=layer)


def valid_mask(mask: Tensor) -> Tensor:
    """[batch pos] bool: real tokens after position 0."""
    valid = mask.bool().clone()
    valid[:, 0] = False
    return valid


def kind_input(detector: Detector, kind: str, layer: int, acts: BatchActs, sae: Any) -> Tensor:
    """The vectors [batch pos d] a kind reads at a layer."""
    site = _site(detector, kind, layer)
    reads = KINDS[kind].reads
    if reads == "attributions":
        return acts.attributions[site]
    if reads == "attention":
        assert acts.self_attention is not None
        return acts.self_attention
    if reads == "dla":
        assert acts.dla is not None
        return acts.dla[..., : dla_width(layer)]
    if reads == "update":
        before, after = _update_sites(layer)
        return acts.acts[after] - acts.acts[before]
    if reads == "lens":
        return torch.cat([acts.acts[site], acts.acts[_last_site(detector)]], -1)
    if reads == "latents":
        x = acts.acts[site]
        with torch.inference_mode():
            return sae.encode(x.reshape(-1, x.shape[-1]).float()).reshape(*x.shape[:-1], -1)
    return acts.acts[site]


def batch_scores(
    detector: Detector,
    model: Any,
    tokens: Tensor,
    mask: Tensor,
    kinds: tuple[str, ...],
    sae: Any = None,
) -> tuple[dict[str, dict[int, Tensor]], BatchActs]:
    """Raw token scores per kind and layer ([batch pos]; baselines under layer -1), and the acts."""
    needs_logits = any(KINDS[k].reads in ("logits", "lens") for k in kinds)
    acts = extract(
        model,
        tokens,
        mask,
        sites_for(detector, kinds),
        logits=needs_logits,
        attribution="attribution" in kinds,
        dla=any(KINDS[k].reads == "dla" for k in kinds),
        attention=any(KINDS[k].reads == "attention" for k in kinds),
    )
    out: dict[str, dict[int, Tensor]] = {}
    for kind in kinds:
        spec = KINDS[kind]
        if spec.reads == "logits":
            assert acts.logits is not None
            out[kind] = {-1: baseline_scores(kind, acts.logits, tokens)}
            continue
        out[kind] = {}
        for layer in detector.kind_layers(kind):
            x = kind_input(detector, kind, layer, acts, sae)
            t = detector.kind_tensors(kind, layer)
            if spec.reads == "attention":  # one profile per input: scores under layer -1
                out[kind][layer] = token_terms(
                    t, x, valid_mask(mask), detector.config.seq_len
                ).cpu()
                continue
            if spec.reads == "lens":
                assert acts.logits is not None
                d = x.shape[-1] // 2
                flat = lens_kl(
                    model,
                    t,
                    x[..., :d].reshape(-1, d),
                    acts.logits.reshape(-1, acts.logits.shape[-1]),
                )
            else:
                flat = spec.score(t, x.reshape(-1, x.shape[-1]), detector.config)
            out[kind][layer] = flat.reshape(x.shape[:-1]).float().cpu()
    return out, acts


def combine(detector: Detector, kind: str, raw: dict[int, Tensor]) -> tuple[Tensor, Tensor]:
    """Combined token scores [batch pos] and the layer that gave each ([batch pos], -1: none)."""
    if list(raw) == [-1]:
        scores = raw[-1]
        return scores, torch.full(scores.shape, -1, dtype=torch.long)
    stats = detector.calibration[kind]["layers"]
    z = []
    for layer, s in raw.items():
        mean, std = stats[str(layer)]
        z.append((torch.log(s.clamp(min=0) + LOG_EPS) - mean) / max(std, 1e-12))
    stacked = torch.stack(z)
    best, which = stacked.max(0)
    if detector.config.combine == "mean":
        best = stacked.mean(0)
    layers = torch.tensor(list(raw), dtype=torch.long)
    return best, layers[which]


def aggregate(scores: Tensor, valid: Tensor, how: str) -> tuple[Tensor, Tensor]:
    """Input scores [batch] from token scores [batch pos], and the position that drove each
    (the maximum's for ``max``, the top-scoring token's for ``mean``, the last real token for
    ``last``: the position whose prediction starts the model's reply)."""
    masked = scores.masked_fill(~valid, -math.inf)
    top, pos = masked.max(-1)
    if how == "max":
        return top, pos
    if how == "last":
        where = torch.arange(valid.shape[-1]).expand_as(valid).masked_fill(~valid, -1)
        last = where.max(-1).values.clamp(min=0)
        return scores.gather(-1, last[:, None])[:, 0], last
    total = scores.masked_fill(~valid, 0).sum(-1)
    return total / valid.sum(-1).clamp(min=1), pos
