"""Fit an anomaly detector on trusted text only, streaming, and calibrate it on held-out text.

Steps:

1. Cut the trusted corpus into windows of ``seq_len`` tokens (BOS first when the tokenizer has
   one; :func:`mechscope.corpus.batches`, deterministic for the seed) until ``n_tokens``.
2. Every ``1/holdout``-th window is held out; the others go through the model once per batch and
   every kind's streaming statistics are updated at every layer (no activation is kept, except
   LOF's bounded reservoir sample).
3. The statistics become tensors (mean and shrunk precision, per-latent Gaussians, LOF reference
   sets).
   With ``fit_on="prompts"`` every trusted document is instead one prompt (its last
   ``seq_len`` tokens, BOS first) and only its last token, the position whose prediction starts
   a reply, is fitted: one vector per prompt, as ``aggregate="last"`` scores an input.
4. The held-out windows are scored: per kind and layer the mean and std of the log token scores
   (which put layers on one scale), then the held-out input scores, combined over layers and per
   layer, that the threshold of :meth:`Detector.threshold` is the quantile of.
5. With ``ensemble`` kinds, a Gaussian over those kinds' held-out input scores
   (:mod:`mechscope.anomaly.ensemble`) and its own held-out scores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mechscope.anomaly.attention import window_update
from mechscope.anomaly.batch import (
    LOG_EPS,
    aggregate,
    batch_scores,
    combine,
    kind_input,
    sites_for,
    valid_mask,
)
from mechscope.anomaly.checkpoint import load_checkpoint, save_checkpoint
from mechscope.anomaly.contrast import DEFAULT_PAIRS
from mechscope.anomaly.detector import Detector, FitConfig
from mechscope.anomaly.ensemble import ENSEMBLE, fit_ensemble
from mechscope.anomaly.extract import extract
from mechscope.anomaly.kinds import KINDS, check_kinds
from mechscope.corpus import Corpus, batches
from mechscope.errors import MechscopeError
from mechscope.models.fingerprint import model_fingerprint
from mechscope.progress import progress

__all__ = ["default_layers", "fit_detector", "model_identity"]

MAX_DEFAULT_LAYERS = 6
PAD = -1  # pads prompts (fit_on="prompts") to seq_len in held-out and checkpointed batches


def default_layers(n_layers: int) -> tuple[int, ...]:
    """Up to six evenly spaced layers, the last one included."""
    n = min(MAX_DEFAULT_LAYERS, n_layers)
    return tuple(sorted({round((i + 1) * n_layers / n) - 1 for i in range(n)}))


def model_identity(model: Any) -> dict[str, Any]:
    return {
        "fingerprint": model_fingerprint(model),
        "name": str(model.provenance.get("name", type(model.hf).__name__)),
        "n_layers": model.dims.n_layers,
    }


def _sae_info(sae: Any, sae_path: str | None) -> dict[str, Any]:
    site = sae.cfg.hook_name
    parts = site.split(".")
    if len(parts) < 3 or parts[0] != "blocks" or not parts[1].isdigit():
        raise MechscopeError(f"the SAE reads {site!r}, not a blocks.L site; pass another SAE")
    return {"path": sae_path, "site": site, "layer": int(parts[1])}


def fit_detector(
    model: Any,
    corpus: Corpus,
    config: FitConfig | None = None,
    *,
    sae: Any = None,
    sae_path: str | None = None,
    quiet: bool = False,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 16,
) -> Detector:
    """A detector of ``config.kinds`` fitted on ``corpus`` (trusted text) for ``model``.

    With ``checkpoint`` (a file path, see :mod:`mechscope.anomaly.checkpoint`), the streamed
    statistics are saved there every ``checkpoint_every`` batches and a fit killed mid-way resumes
    from them; delete the file once the detector is saved."""
    config = config or FitConfig()
    check_kinds(config.kinds, sae)
    if "contrast" in config.kinds and not config.contrast:
        config = replace(config, contrast=DEFAULT_PAIRS)  # recorded in the detector
    n_layers = model.dims.n_layers
    layers = list(config.layers) if config.layers is not None else list(default_layers(n_layers))
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise MechscopeError(f"layer {layer} is out of range; the model has {n_layers} layers")
    detector = Detector(config, model_identity(model), layers)
    if "sae" in config.kinds:
        detector.sae = _sae_info(sae, sae_path)
    mech = tuple(k for k in config.kinds if KINDS[k].reads != "logits")
    stats = {(k, L): KINDS[k].new_stats(config) for k in mech for L in detector.kind_layers(k)}
    saver = None
    if checkpoint is not None:
        if checkpoint_every < 1:
            raise MechscopeError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        key = {**asdict(config), "model": detector.model["fingerprint"], "corpus": corpus.name}
        key["sae"] = sae_path
        saver = (Path(checkpoint), json.loads(json.dumps(key)), checkpoint_every)
    prepared = {k: spec(model, detector) for k in mech if (spec := KINDS[k].prepare) is not None}
    held = _stream(detector, model, corpus, mech, stats, sae, quiet, saver)
    for (kind, layer), s in stats.items():
        given = prepared.get(kind, {}).get(layer, {})
        for name, t in KINDS[kind].finish(s, config, **given).items():
            detector.tensors[f"{kind}/{layer}/{name}"] = t
    _calibrate(detector, model, held, sae, quiet)
    return detector


def _stream(
    detector: Detector,
    model: Any,
    corpus: Corpus,
    mech: tuple[str, ...],
    stats: dict[tuple[str, int], Any],
    sae: Any,
    quiet: bool,
    saver: tuple[Path, dict[str, Any], int] | None = None,
) -> list[Tensor]:
    """Update ``stats`` with the fitting windows; return the held-out windows. With ``saver``
    (checkpoint path, settings key, period in batches), resume from and write checkpoints."""
    cfg = detector.config
    period = max(2, round(1 / cfg.holdout))
    bos = model.tokenizer.bos_token_id is not None
    sites = sites_for(detector, mech)
    held: list[Tensor] = []
    done = seen = fitted = 0
    if saver is not None and (state := load_checkpoint(saver[0], saver[1], stats)) is not None:
        counters, held = state
        done, seen, fitted = counters["batches"], counters["seen"], counters["fitted"]
    try:
        if cfg.fit_on == "prompts":
            stream = _prompt_batches(corpus, model.tokenizer, cfg)
        else:
            stream = batches(
                corpus,
                model.tokenizer,
                batch_size=cfg.batch_size,
                seq_len=cfg.seq_len,
                n_tokens=cfg.n_tokens,
                seed=cfg.seed,
                prepend_bos=bos,
            )
        total = -(-cfg.n_tokens // (cfg.seq_len * cfg.batch_size))
        batch_no = 0
        for batch in progress(stream, total=total, desc="fit", quiet=quiet, unit="batch"):
            batch_no += 1
            if batch_no <= done:  # counted by the checkpoint this fit resumed from
                continue
            if saver is not None and batch_no - 1 > done and (batch_no - 1) % saver[2] == 0:
                counters = {"batches": batch_no - 1, "seen": seen, "fitted": fitted}
                save_checkpoint(saver[0], saver[1], counters, stats, held)
            index = torch.arange(seen, seen + batch.shape[0])
            seen += batch.shape[0]
            hold = index % period == period - 1
            held.extend(batch[hold])
            train = batch[~hold]
            if train.shape[0] > 0 and mech:
                _update(detector, model, train, sites, stats, sae)
            fitted += train.shape[0]
    except MechscopeError as exc:
        if "has no document" not in str(exc) and "is empty" not in str(exc):
            raise
        fitted = 0
    if saver is not None and fitted > 0 and held:
        counters = {"batches": batch_no, "seen": seen, "fitted": fitted}
        save_checkpoint(saver[0], saver[1], counters, stats, held)
    if fitted == 0 or not held:
        what = "prompts" if cfg.fit_on == "prompts" else f"windows of {cfg.seq_len} tokens"
        raise MechscopeError(
            f"the trusted set {corpus.name!r} is empty or too short: it needs at least {period} "
            f"{what} (one held out to calibrate); pass more trusted text or a smaller --seq-len"
        )
    return held


def _prompt_batches(corpus: Corpus, tokenizer: Any, cfg: FitConfig) -> Iterator[Tensor]:
    """Batches [batch seq_len] of trusted prompts in corpus order, one per document: BOS (when
    the tokenizer has one) and the document's last tokens, right-padded with ``PAD``; until
    ``n_tokens`` real tokens are read."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    keep = cfg.seq_len - len(bos)
    rows: list[Tensor] = []
    total = 0
    for text in corpus.documents():
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])[-keep:]
        if not ids or (not bos and len(ids) < 2):
            continue
        row = torch.full((cfg.seq_len,), PAD, dtype=torch.long)
        row[: len(bos) + len(ids)] = torch.tensor(bos + ids)
        rows.append(row)
        total += len(bos) + len(ids)
        if len(rows) == cfg.batch_size or total >= cfg.n_tokens:
            yield torch.stack(rows)
            rows = []
        if total >= cfg.n_tokens:
            return
    if rows:
        yield torch.stack(rows)


def _unpad(tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Tokens and mask of a batch right-padded with ``PAD`` (cut to its longest row)."""
    mask = (tokens != PAD).long()
    n = int(mask.sum(-1).max())
    return tokens[:, :n].clamp(min=0), mask[:, :n]


def fit_mask(config: FitConfig, mask: Tensor) -> Tensor:
    """[batch pos] bool: the tokens fitted and put on the layer scale: every real token after
    position 0, or with ``fit_on="prompts"`` only each prompt's last one."""
    valid = valid_mask(mask)
    if config.fit_on != "prompts":
        return valid
    last = torch.zeros_like(valid)
    _, where = aggregate(torch.zeros(valid.shape), valid, "last")
    last[torch.arange(valid.shape[0]), where] = True
    return last & valid


def _update(
    detector: Detector,
    model: Any,
    tokens: Tensor,
    sites: list[str],
    stats: dict[tuple[str, int], Any],
    sae: Any,
) -> None:
    """Add one batch of fitting windows to every kind's statistics at every layer."""
    tokens, mask = _unpad(tokens)
    attribution = any(KINDS[k].reads == "attributions" for k, _ in stats)
    dla = any(KINDS[k].reads == "dla" for k, _ in stats)
    attention = any(KINDS[k].reads == "attention" for k, _ in stats)
    acts = extract(
        model, tokens, mask, sites, attribution=attribution, dla=dla, attention=attention
    )
    valid = fit_mask(detector.config, mask)
    for (kind, layer), s in stats.items():
        x = kind_input(detector, kind, layer, acts, sae)
        if KINDS[kind].reads == "attention":  # one profile per window
            window_update(s, x, valid_mask(mask))
        else:
            s.update(x[valid])


def _calibrate(detector: Detector, model: Any, held: list[Tensor], sae: Any, quiet: bool) -> None:
    """Per kind: layer scales and held-out input scores (combined, and per layer)."""
    cfg, kinds = detector.config, detector.config.kinds
    raw: dict[str, dict[int, list[Tensor]]] = {k: {} for k in kinds}
    valid_all = []
    chunks = [
        torch.stack(held[i : i + cfg.batch_size]) for i in range(0, len(held), cfg.batch_size)
    ]
    fitted_all = []
    for padded in progress(chunks, desc="calibrate", quiet=quiet, unit="batch"):
        tokens, mask = _unpad(padded)
        scores, _ = batch_scores(detector, model, tokens, mask, kinds, sae)
        width = padded.shape[1]  # back to the common width, so that the batches concatenate
        valid_all.append(_widen(valid_mask(mask), width))
        fitted_all.append(_widen(fit_mask(cfg, mask), width))
        for kind, per_layer in scores.items():
            for layer, s in per_layer.items():
                raw[kind].setdefault(layer, []).append(_widen(s, width))
    valid, fitted = torch.cat(valid_all), torch.cat(fitted_all)
    for kind in kinds:
        per_layer = {layer: torch.cat(parts) for layer, parts in raw[kind].items()}
        how = KINDS[kind].aggregate or cfg.aggregate
        entry: dict[str, Any] = {"aggregate": how, "layers": {}, "layer_scores": {}}
        for layer, s in per_layer.items():
            if layer >= 0:
                logs = torch.log(s[fitted].clamp(min=0) + LOG_EPS).double()
                entry["layers"][str(layer)] = [float(logs.mean()), float(logs.std())]
            entry["layer_scores"][str(layer)] = aggregate(s, valid, how)[0].tolist()
        detector.calibration[kind] = entry
        combined, _ = combine(detector, kind, per_layer)
        entry["scores"] = aggregate(combined, valid, how)[0].tolist()
        if not np.isfinite(entry["scores"]).all():
            raise MechscopeError(f"the {kind} detector gave non-finite scores on trusted text")
    if cfg.ensemble:
        detector.calibration[ENSEMBLE] = fit_ensemble(
            detector.calibration, cfg.ensemble, cfg.ensemble_combine
        )


def _widen(t: Tensor, width: int) -> Tensor:
    """``t`` [batch pos] right-padded with zeros (False) to ``width`` positions."""
    return torch.nn.functional.pad(t, (0, width - t.shape[1]))
