"""Score inputs with a fitted detector: per input and per token, flags, and what drove each flag.

Each input (a document) is tokenised on its own (BOS first when the tokenizer has one; at most
``max_tokens`` tokens) and batched with others of similar length. The input score is the
aggregate (``max`` by default, ``mean`` for the baselines) of its token scores, combined over
layers (see :mod:`mechscope.anomaly.batch`); it is flagged when above the threshold calibrated on
held-out trusted text at the chosen false-positive rate. For the mechanistic kinds the layer and
the top features (dimensions, SAE latents or principal directions, by their term in the score) of
the token that drove the input score are reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.anomaly.attention import document_terms
from mechscope.anomaly.batch import aggregate, batch_scores, combine, kind_input, valid_mask
from mechscope.anomaly.detector import Detector
from mechscope.anomaly.ensemble import ENSEMBLE, ensemble_scores, ensemble_terms
from mechscope.anomaly.kinds import KINDS
from mechscope.anomaly.lens import lens_terms
from mechscope.errors import MechscopeError
from mechscope.models.fingerprint import model_fingerprint
from mechscope.progress import progress

__all__ = [
    "AnomalyScores",
    "InputScore",
    "check_model",
    "default_kind",
    "layer_scores",
    "score_texts",
]

TOP_FEATURES = 5


@dataclass(frozen=True)
class InputScore:
    index: int
    score: float
    flagged: bool
    layer: int | None  # the layer that drove the score (None for the baselines)
    token_scores: list[tuple[str, float]]
    features: list[tuple[int, float]]  # (feature index, term in the score), largest first

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "score": self.score,
            "flagged": self.flagged,
            "layer": self.layer,
            "token_scores": [{"token": t, "score": s} for t, s in self.token_scores],
            "features": [{"feature": f, "term": v} for f, v in self.features],
        }


@dataclass(frozen=True)
class AnomalyScores:
    detector: str
    kind: str
    fpr: float
    threshold: float
    inputs: list[InputScore]

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "kind": self.kind,
            "fpr": self.fpr,
            "threshold": self.threshold,
            "inputs": [i.to_dict() for i in self.inputs],
        }


def check_model(detector: Detector, model: Any) -> None:
    """A one-line error when ``model`` is not the model the detector was fitted on."""
    mine = model_fingerprint(model)
    theirs = detector.model["fingerprint"]
    if mine != theirs:
        raise MechscopeError(
            f"the detector was fitted on another model ({detector.model['name']}, weights "
            f"{theirs}; this one is {mine}); fit a detector on this model with mechscope anomaly fit"
        )


def _tokenize(model: Any, texts: list[str], max_tokens: int) -> list[list[int]]:
    bos = model.tokenizer.bos_token_id
    out = []
    for i, text in enumerate(texts):
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = ([bos] if bos is not None else []) + list(ids)
        if len(ids) < 2:
            raise MechscopeError(f"input {i} has no token to score; drop it or add text")
        out.append(ids[: min(max_tokens, model.dims.n_ctx)])
    return out


def _batches(
    ids: list[list[int]], batch_size: int, pad: int
) -> list[tuple[list[int], Tensor, Tensor]]:
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        n = max(len(ids[r]) for r in rows)
        tokens = torch.full((len(rows), n), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        for j, r in enumerate(rows):
            tokens[j, : len(ids[r])] = torch.tensor(ids[r])
            mask[j, : len(ids[r])] = 1
        out.append((rows, tokens, mask))
    return out


def _run(
    detector: Detector,
    model: Any,
    texts: list[str],
    kinds: tuple[str, ...],
    sae: Any,
    max_tokens: int,
    batch_size: int,
    quiet: bool,
) -> Any:
    """Yield ``(rows, tokens, mask, raw scores, acts)`` per batch, after the checks."""
    check_model(detector, model)
    for kind in kinds:
        if kind not in detector.calibration:
            fitted = ", ".join(detector.calibration)
            raise MechscopeError(f"the detector has no {kind!r} kind (fitted: {fitted})")
    if "sae" in kinds and sae is None:
        raise MechscopeError("the sae kind needs its SAE: pass --sae or keep it at its path")
    pad = model.tokenizer.pad_token_id
    pad = pad if pad is not None else (model.tokenizer.eos_token_id or 0)
    chunks = _batches(_tokenize(model, texts, max_tokens), batch_size, pad)
    for rows, tokens, mask in progress(chunks, desc="score", quiet=quiet, unit="batch"):
        raw, acts = batch_scores(detector, model, tokens, mask, kinds, sae)
        yield rows, tokens, mask, raw, acts


def _features(
    detector: Detector,
    model: Any,
    kind: str,
    layer: int,
    acts: Any,
    where: tuple[int, int],
    sae: Any,
    valid: Tensor | None = None,
) -> list[tuple[int, float]]:
    """The top features of the token at ``where`` (row, position); for ``lens``, output tokens;
    for ``attention``, heads (``L n_heads + h``) by their term of the input's score."""
    row, pos = where
    t = detector.kind_tensors(kind, layer)
    if KINDS[kind].reads == "attention":  # heads, by their term of the input's score
        x = kind_input(detector, kind, layer, acts, sae)[row][None]
        assert valid is not None
        terms = document_terms(t, x, valid[None], detector.config.seq_len)[0]
        top = terms.topk(min(TOP_FEATURES, terms.numel()))
        return [(int(i), float(v)) for v, i in zip(top.values, top.indices)]
    x = kind_input(detector, kind, layer, acts, sae)[row, pos][None]
    if KINDS[kind].reads == "lens":
        terms = lens_terms(model, t, x[:, : x.shape[-1] // 2], acts.logits[row, pos][None])[0]
    else:
        terms = KINDS[kind].terms(t, x, detector.config)[0]
    top = terms.topk(min(TOP_FEATURES, terms.numel()))
    return [(int(i), float(v)) for v, i in zip(top.values, top.indices)]


def score_texts(
    detector: Detector,
    model: Any,
    texts: list[str],
    *,
    kind: str | None = None,
    fpr: float = 0.01,
    layer: int | None = None,
    sae: Any = None,
    max_tokens: int = 256,
    batch_size: int = 8,
    name: str = "",
    quiet: bool = False,
) -> AnomalyScores:
    """Scores, flags and token scores of ``texts`` with one kind (default: the ensemble when one
    was fitted, else the first kind)."""
    kind = kind or default_kind(detector)
    if kind == ENSEMBLE:
        return _score_ensemble(detector, model, texts, fpr, layer, sae, max_tokens, batch_size,
                               name, quiet)  # fmt: skip
    how = detector.calibration.get(kind, {}).get("aggregate", "max")
    threshold = _threshold(detector, kind, fpr, layer)
    results: dict[int, InputScore] = {}
    for rows, tokens, mask, raw, acts in _run(
        detector, model, texts, (kind,), sae, max_tokens, batch_size, quiet
    ):
        token, which = _token_scores(detector, kind, raw[kind], layer)
        valid = valid_mask(mask)
        scores, pos = aggregate(token, valid, how)
        for j, r in enumerate(rows):
            p, n = int(pos[j]), int(mask[j].sum())
            top_layer = int(which[j, p])
            feats = []
            if top_layer >= 0 or KINDS[kind].reads == "attention":
                feats = _features(detector, model, kind, top_layer, acts, (j, p), sae, valid[j])
            results[r] = InputScore(
                r,
                float(scores[j]),
                bool(scores[j] > threshold),
                top_layer if top_layer >= 0 else None,
                list(zip(model.to_str_tokens(tokens[j, 1:n]), token[j, 1:n].tolist())),
                feats,
            )
    return AnomalyScores(name, kind, fpr, threshold, [results[i] for i in range(len(texts))])


def default_kind(detector: Detector) -> str:
    """The kind scored when none is named: the ensemble when one was fitted, else the first."""
    return ENSEMBLE if ENSEMBLE in detector.calibration else detector.config.kinds[0]


def _ensemble_entry(detector: Detector) -> dict[str, Any]:
    """The fitted ensemble's calibration entry, or a one-line error when there is none."""
    if ENSEMBLE not in detector.calibration:
        raise MechscopeError(
            "the detector has no ensemble; fit one with --ensemble KIND,KIND (fitted: "
            f"{', '.join(detector.calibration)})"
        )
    return detector.calibration[ENSEMBLE]


def _ensemble_batch(
    detector: Detector, raw: dict[str, dict[int, Tensor]], mask: Tensor
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """Input scores [batch], token scores [batch pos], per-member terms of the input scores
    [batch members] and each member's layer per token ([batch pos], -1: none) of one batch."""
    entry = _ensemble_entry(detector)
    valid = valid_mask(mask)
    inputs, tokens, layers = {}, {}, {}
    for member in entry["members"]:
        tokens[member], layers[member] = combine(detector, member, raw[member])
        how = detector.calibration[member]["aggregate"]
        inputs[member] = aggregate(tokens[member], valid, how)[0]
    terms = ensemble_terms(entry, inputs)
    return terms.sum(-1).float(), ensemble_scores(entry, tokens), terms, layers


def _score_ensemble(
    detector: Detector,
    model: Any,
    texts: list[str],
    fpr: float,
    layer: int | None,
    sae: Any,
    max_tokens: int,
    batch_size: int,
    name: str,
    quiet: bool,
) -> AnomalyScores:
    """:func:`score_texts` for the ensemble: features are ``(member index, term)``; the layer is
    the one that drove the largest member's score at the input's top token, if it has layers."""
    entry = _ensemble_entry(detector)
    if layer is not None:
        raise MechscopeError("the ensemble combines kinds, not layers: drop --layer")
    members = tuple(entry["members"])
    threshold = detector.threshold(ENSEMBLE, fpr)
    last = all(detector.calibration[m]["aggregate"] == "last" for m in members)
    results: dict[int, InputScore] = {}
    for rows, tokens, mask, raw, _ in _run(
        detector, model, texts, members, sae, max_tokens, batch_size, quiet
    ):
        scores, token, terms, layers = _ensemble_batch(detector, raw, mask)
        valid = valid_mask(mask)
        pos = aggregate(token, valid, "last" if last else "max")[1]
        for j, r in enumerate(rows):
            p, n = int(pos[j]), int(mask[j].sum())
            order = terms[j].argsort(descending=True).tolist()
            top_layer = int(layers[members[order[0]]][j, p])
            results[r] = InputScore(
                r,
                float(scores[j]),
                bool(scores[j] > threshold),
                top_layer if top_layer >= 0 else None,
                list(zip(model.to_str_tokens(tokens[j, 1:n]), token[j, 1:n].tolist())),
                [(i, float(terms[j, i])) for i in order],
            )
    return AnomalyScores(name, ENSEMBLE, fpr, threshold, [results[i] for i in range(len(texts))])


def _token_scores(
    detector: Detector, kind: str, per_layer: dict[int, Tensor], layer: int | None
) -> tuple[Tensor, Tensor]:
    """Token scores [batch pos] combined over layers (or of ``layer``), and the layer of each."""
    if layer is None:
        return combine(detector, kind, per_layer)
    if layer not in per_layer:
        raise MechscopeError(f"the {kind} detector has no layer {layer}; it has {list(per_layer)}")
    return per_layer[layer], torch.full(per_layer[layer].shape, layer)


def _threshold(detector: Detector, kind: str, fpr: float, layer: int | None) -> float:
    if kind not in detector.calibration:
        raise MechscopeError(
            f"the detector has no {kind!r} kind (fitted: {', '.join(detector.calibration)})"
        )
    if layer is None:
        return detector.threshold(kind, fpr)
    import numpy as np

    scores = detector.calibration[kind]["layer_scores"].get(str(layer))
    if scores is None:
        raise MechscopeError(f"the {kind} detector has no layer {layer}")
    return float(np.quantile(np.asarray(scores), 1 - fpr, method="higher"))


def layer_scores(
    detector: Detector,
    model: Any,
    texts: list[str],
    *,
    kinds: tuple[str, ...] | None = None,
    sae: Any = None,
    max_tokens: int = 256,
    batch_size: int = 8,
    quiet: bool = False,
) -> dict[str, dict[str, list[float]]]:
    """Input scores of every kind, combined (key ``"all"``) and per layer (``"L"``; the baselines
    and the ensemble have only ``"all"``), in the order of ``texts``: what an evaluation
    compares. ``kinds`` may name ``"ensemble"``; by default every fitted kind and the ensemble."""
    if kinds is None:
        kinds = tuple(detector.config.kinds)
        kinds += (ENSEMBLE,) if ENSEMBLE in detector.calibration else ()
    members = tuple(_ensemble_entry(detector)["members"]) if ENSEMBLE in kinds else ()
    run = tuple(k for k in kinds if k != ENSEMBLE)
    run += tuple(m for m in members if m not in run)
    out: dict[str, dict[str, list[float]]] = {k: {} for k in kinds}
    for rows, _, mask, raw, _ in _run(
        detector, model, texts, run, sae, max_tokens, batch_size, quiet
    ):
        valid = valid_mask(mask)
        for kind in kinds:
            if kind == ENSEMBLE:
                columns = {"all": _ensemble_batch(detector, raw, mask)[0]}
                how = "input"
            else:
                how = detector.calibration[kind]["aggregate"]
                token, _ = combine(detector, kind, raw[kind])
                columns = {"all": token}
                columns.update({str(L): s for L, s in raw[kind].items() if L >= 0})
            for key, t in columns.items():
                values = out[kind].setdefault(key, [0.0] * len(texts))
                scores = t if how == "input" else aggregate(t, valid, how)[0]
                for r, v in zip(rows, scores.tolist(), strict=True):
                    values[r] = v
    return out
