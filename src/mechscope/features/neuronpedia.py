"""Export to and import from Neuronpedia's export layout (its ``utils/neuronpedia-utils``
``export-data.py``): one folder per model, one per source, gzipped JSONL batches of 1,024 features.

    OUT/<modelId>/mechscope-vocab.json.gz        (mechscope only: the token strings by id)
    OUT/<modelId>/<sourceId>/model.jsonl, source.jsonl, sourceset.jsonl
    OUT/<modelId>/<sourceId>/features/batch-N.jsonl.gz      Neuron rows
    OUT/<modelId>/<sourceId>/activations/batch-N.jsonl.gz   Activation rows
    OUT/<modelId>/<sourceId>/explanations/batch-N.jsonl.gz  Explanation rows
    OUT/<modelId>/<sourceId>/mechscope.json                 (mechscope only: source and build)
    OUT/<modelId>/<sourceId>/mechscope/batch-N.jsonl.gz     (mechscope only: what Neuronpedia
        has no column for: min, mean, std, exact histogram edges, token ids, window numbers,
        non-activating examples, explanation status and scores)

Neuronpedia's rows carry only its own columns, so its importer reads them as they are; the
``mechscope`` files make a round trip exact. Mapping: ``maxActApprox`` = max, ``frac_nonzero`` =
density, ``freq_hist_data_bar_values`` / ``heights`` = histogram bin centres / counts,
``pos_str``/``pos_values`` and ``neg_str``/``neg_values`` = the logit table,
``topkCosSimIndices``/``Values`` = neighbours; a top example is an Activation with ``binMin`` = -1,
an interval example one with ``binMin``/``binMax`` its interval (``binContains`` -1: not counted).
Importing a Neuronpedia export without the mechscope files numbers its distinct token strings
itself (meta ``vocab`` = ``synthetic``), takes mean, std and min as 0 and has no negatives.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mechscope.errors import MechscopeError
from mechscope.features.db import FeatureDB, create_db, floats_blob, ints_blob
from mechscope.files import atomic_folder

__all__ = ["BATCH", "export_neuronpedia", "import_neuronpedia"]

BATCH = 1024


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "model"


def source_id(source: dict[str, Any]) -> str:
    """Neuronpedia's ``<layer>-<set>`` id: mlp:3 -> 3-mlp, attn:3 -> 3-att, sae:NAME -> L-NAME."""
    layer = source["hook_name"].split(".")[1] if source["hook_name"].startswith("blocks.") else "0"
    kind, _, rest = source["source"].partition(":")
    name = {"mlp": "mlp", "attn": "att"}.get(kind, _slug(rest))
    return f"{layer}-{name}"


def _write_gz(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _read_gz(folder: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(folder.glob("batch-*.jsonl*"), key=lambda p: int(p.name.split("-")[1].split(".")[0])):  # fmt: skip
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            yield from (json.loads(line) for line in f if line.strip())


def _neuron(f: dict[str, Any], model_id: str, sid: str, src: dict[str, Any]) -> dict[str, Any]:
    edges, counts = f["histogram"]["edges"], f["histogram"]["counts"]
    logits = f["logits"]
    return {
        "modelId": model_id, "layer": sid, "index": str(f["index"]),
        "maxActApprox": f["max"], "frac_nonzero": f["density"], "creatorId": None,
        "freq_hist_data_bar_values": [(a + b) / 2 for a, b in zip(edges, edges[1:])],
        "freq_hist_data_bar_heights": counts,
        "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
        "pos_str": [p["token"] for p in logits["promotes"]], "pos_values": [p["value"] for p in logits["promotes"]],  # fmt: skip
        "neg_str": [p["token"] for p in logits["suppresses"]], "neg_values": [p["value"] for p in logits["suppresses"]],  # fmt: skip
        "topkCosSimIndices": [n["index"] for n in f["neighbours"]],
        "topkCosSimValues": [n["cosine"] for n in f["neighbours"]],
        "sourceSetName": sid.split("-", 1)[1], "hookName": src["hook_name"],
        "neuron_alignment_indices": [], "neuron_alignment_values": [], "neuron_alignment_l1": [],
        "correlated_neurons_indices": [], "correlated_neurons_pearson": [], "correlated_neurons_l1": [],  # fmt: skip
        "decoder_weights_dist": [], "vector": [], "vectorLabel": None, "hasVector": False,
        "vectorDefaultSteerStrength": None,
    }  # fmt: skip


def _activation(ex: dict[str, Any], f: dict[str, Any], model_id: str, sid: str, n: int, corpus: str) -> dict[str, Any]:  # fmt: skip
    return {
        "id": f"{sid}-{f['index']}-{n}", "modelId": model_id, "layer": sid, "index": str(f["index"]),
        "creatorId": None, "dataSource": corpus, "tokens": ex["tokens"], "values": ex["values"],
        "maxValue": ex["value"], "minValue": min(ex["values"]), "maxValueTokenIndex": ex["position"],
        "dfaValues": [], "dfaMaxValue": None, "dfaTargetIndex": None,
        "binMin": ex.get("lo", -1), "binMax": ex.get("hi", -1), "binContains": -1,
    }  # fmt: skip


def _export_source(db: FeatureDB, src: dict[str, Any], model_id: str, root: Path) -> None:
    sid = source_id(src)
    folder = root / sid
    meta = db.meta()
    folder.mkdir(parents=True)
    for name, row in [
        (
            "model.jsonl",
            {"id": model_id, "displayName": meta.get("model", model_id), "creatorId": None},
        ),  # fmt: skip
        (
            "source.jsonl",
            {
                "id": sid,
                "modelId": model_id,
                "setName": sid.split("-", 1)[1],
                "hasDashboards": True,
                "visibility": "PUBLIC",
                "creatorId": None,
            },
        ),  # fmt: skip
        (
            "sourceset.jsonl",
            {
                "modelId": model_id,
                "name": sid.split("-", 1)[1],
                "type": src["kind"],
                "description": f"mechscope {src['source']} at {src['hook_name']}",
                "creatorId": None,
                "visibility": "PUBLIC",
            },
        ),  # fmt: skip
    ]:
        (folder / name).write_text(json.dumps(row) + "\n", encoding="utf-8")
    info = {**db.source(src["source"]), "meta": meta}
    (folder / "mechscope.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    corpus = meta.get("corpus", "")
    for b, start in enumerate(range(0, src["n_features"], BATCH)):
        neurons, acts, expls, extras = [], [], [], []
        for i in range(start, min(start + BATCH, src["n_features"])):
            f = db.feature(src["source"], i)
            neurons.append(_neuron(f, model_id, sid, src))
            shown = f["examples"] + f["quantile_examples"]
            acts += [_activation(ex, f, model_id, sid, n, corpus) for n, ex in enumerate(shown)]
            expls += [{"id": f"{sid}-{i}-{e['id']}", "modelId": model_id, "layer": sid, "index": str(i),
                       "authorId": None, "description": e["text"], "embedding": None, "typeName": "mechscope",
                       "explanationModelName": e["explainer"], "umap_x": None, "umap_y": None,
                       "umap_cluster": None, "umap_log_feature_sparsity": None}
                      for e in f["explanations"] if e["status"] == "ok"]  # fmt: skip
            extras.append({
                "index": i, "min": f["min"], "mean": f["mean"], "std": f["std"], "histogram": f["histogram"],
                "logits": f["logits"], "neighbours": f["neighbours"],
                "examples": [{k: ex[k] for k in ("token_ids", "window")} for ex in shown],
                "negative_examples": f["negative_examples"], "explanations": f["explanations"],
            })  # fmt: skip
        _write_gz(folder / "features" / f"batch-{b}.jsonl.gz", neurons)
        _write_gz(folder / "activations" / f"batch-{b}.jsonl.gz", acts)
        _write_gz(folder / "explanations" / f"batch-{b}.jsonl.gz", expls)
        _write_gz(folder / "mechscope" / f"batch-{b}.jsonl.gz", extras)


def export_neuronpedia(db: FeatureDB, out: str | Path, model_id: str | None = None) -> Path:
    """Write every source of ``db`` under ``out/<modelId>/`` (atomically); give that folder."""
    model_id = model_id or _slug(Path(db.meta().get("model", "model")).name)
    target = Path(out) / model_id
    if target.exists():
        raise MechscopeError(f"{target} exists; pass an empty --out folder or remove it")
    with atomic_folder(target) as tmp:
        vocab = [db.vocab().get(i, "") for i in range(max(db.vocab(), default=-1) + 1)]
        with gzip.open(tmp / "mechscope-vocab.json.gz", "wt", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        for src in db.sources():
            _export_source(db, src, model_id, tmp)
    return target


def _source_folders(folder: Path) -> list[Path]:
    if (folder / "source.jsonl").is_file():
        return [folder]
    found = sorted(p.parent for p in folder.glob("*/source.jsonl"))
    if not found:
        raise MechscopeError(
            f"{folder} holds no Neuronpedia export (no source.jsonl); pass a model or source folder"
        )
    return found


class _Vocab:
    """Token ids: mechscope's own when exported by mechscope, else numbered as they appear."""

    def __init__(self, strings: list[str] | None) -> None:
        self.synthetic = strings is None
        self.by_id = dict(enumerate(strings or []))
        self.ids = {t: i for i, t in reversed(list(self.by_id.items()))}

    def id(self, token: str) -> int:
        if token not in self.ids:
            self.ids[token] = len(self.by_id)
            self.by_id[len(self.by_id)] = token
        return self.ids[token]


def _edges(centres: list[float]) -> list[float]:
    if not centres:
        return []
    w = centres[1] - centres[0] if len(centres) > 1 else 1.0
    return [c - w / 2 for c in centres] + [centres[-1] + w / 2]


def _import_source(db: FeatureDB, folder: Path, vocab: _Vocab) -> dict[str, Any]:
    info = json.loads((folder / "mechscope.json").read_text()) if (folder / "mechscope.json").is_file() else None  # fmt: skip
    sid = json.loads((folder / "source.jsonl").read_text().splitlines()[0])["id"]
    neurons = {int(n["index"]): n for n in _read_gz(folder / "features")}
    extras = {e["index"]: e for e in _read_gz(folder / "mechscope")} if info else {}
    acts: dict[int, list[dict[str, Any]]] = {}
    for a in _read_gz(folder / "activations"):
        acts.setdefault(int(a["index"]), []).append(a)
    name = info["source"] if info else f"np:{sid}"
    hook = info["hook_name"] if info else next(iter(neurons.values()), {}).get("hookName", "")
    n = max(neurons, default=-1) + 1
    b = db.backend
    b.execute("INSERT INTO sources (source, kind, hook_name, n_features, config) VALUES (?, ?, ?, ?, ?)",
              [name, info["kind"] if info else "latent", hook, n, json.dumps(info["config"] if info else {"neuronpedia": sid})])  # fmt: skip
    feature_rows, example_rows = [], []
    for i, nrow in sorted(neurons.items()):
        x = extras.get(i, {})
        hist = x.get("histogram") or {"edges": _edges(nrow["freq_hist_data_bar_values"]), "counts": nrow["freq_hist_data_bar_heights"]}  # fmt: skip
        logits = x.get("logits") or {
            "promotes": [{"id": vocab.id(t), "token": t, "value": v} for t, v in zip(nrow["pos_str"], nrow["pos_values"])],
            "suppresses": [{"id": vocab.id(t), "token": t, "value": v} for t, v in zip(nrow["neg_str"], nrow["neg_values"])],
        }  # fmt: skip
        nb = x.get("neighbours") or [{"index": j, "cosine": c} for j, c in zip(nrow["topkCosSimIndices"], nrow["topkCosSimValues"])]  # fmt: skip
        feature_rows.append((name, i, nrow["maxActApprox"], x.get("min", 0.0), x.get("mean", 0.0), x.get("std", 0.0),
                             nrow["frac_nonzero"], json.dumps(hist), json.dumps(logits), json.dumps(nb)))  # fmt: skip
        slots = {"top": 0, "quantile": 0, "negative": 0}
        known = x.get("examples", [])
        for k, a in enumerate(acts.get(i, [])):
            kind = "top" if a["binMin"] == -1 else "quantile"
            ids = known[k]["token_ids"] if k < len(known) else [vocab.id(t) for t in a["tokens"]]
            win = known[k]["window"] if k < len(known) else -1
            lo, hi = (None, None) if kind == "top" else (a["binMin"], a["binMax"])
            example_rows.append((name, i, kind, slots[kind], a["maxValue"], a["maxValueTokenIndex"], win, lo, hi, ints_blob(ids), floats_blob(a["values"])))  # fmt: skip
            slots[kind] += 1
        for ex in x.get("negative_examples", []):
            example_rows.append((name, i, "negative", slots["negative"], ex["value"], ex["position"], ex["window"], None, None, ints_blob(ex["token_ids"]), floats_blob(ex["values"])))  # fmt: skip
            slots["negative"] += 1
    b.executemany("INSERT INTO features (source, idx, maximum, minimum, mean, std, density, histogram, logits, neighbours) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", feature_rows)  # fmt: skip
    b.executemany("INSERT INTO examples (source, idx, kind, slot, value, position, win, lo, hi, token_ids, acts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", example_rows)  # fmt: skip
    _import_explanations(db, folder, name, extras)
    return info["meta"] if info else {}


def _import_explanations(db: FeatureDB, folder: Path, name: str, extras: dict[int, Any]) -> None:
    b = db.backend
    if extras:  # mechscope's own rows: status, errors and scores too
        for i, x in sorted(extras.items()):
            for e in x["explanations"]:
                eid = b.query("INSERT INTO explanations (source, idx, explainer, text, status, error, created) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                              [name, i, e["explainer"], e["text"], e["status"], e["error"], e["created"]])[0][0]  # fmt: skip
                for s in e["scores"]:
                    b.execute("INSERT INTO scores (explanation_id, scorer, status, value, control, error, details, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                              [eid, s["scorer"], s["status"], s["value"], s["control"], s["error"],
                               None if s["details"] is None else json.dumps(s["details"]), s["created"]])  # fmt: skip
        return
    for e in _read_gz(folder / "explanations"):
        b.execute("INSERT INTO explanations (source, idx, explainer, text, status, created) VALUES (?, ?, ?, ?, 'ok', ?)",
                  [name, int(e["index"]), e.get("explanationModelName") or e.get("typeName") or "neuronpedia", e["description"], datetime.now(timezone.utc).isoformat(timespec="seconds")])  # fmt: skip


def import_neuronpedia(folder: str | Path, out: str) -> list[str]:
    """Read a Neuronpedia export (a model folder or one source folder) into a new database
    ``out``; give the names of the sources imported."""
    folder = Path(folder)
    sources = _source_folders(folder)
    vocab_file = next((p / "mechscope-vocab.json.gz" for p in (folder, folder.parent) if (p / "mechscope-vocab.json.gz").is_file()), None)  # fmt: skip
    strings = None
    if vocab_file is not None:
        with gzip.open(vocab_file, "rt", encoding="utf-8") as f:
            strings = json.load(f)
    vocab = _Vocab(strings)
    with create_db(out) as db:
        if "status" in db.meta():
            raise MechscopeError(f"{out} already holds features; import into a new database")
        b = db.backend
        with b.transaction():
            meta: dict[str, str] = {}
            for s in sources:
                meta = {**_import_source(db, s, vocab), **meta}
            meta = {k: v for k, v in meta.items() if k not in ("format", "schema_version")}
            meta.update(
                {"status": "complete", "vocab": "synthetic" if vocab.synthetic else "model"}
            )
            meta.setdefault("model", folder.name)
            b.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
            b.executemany(
                "INSERT INTO vocab (id, token) VALUES (?, ?)", sorted(vocab.by_id.items())
            )
        return [s["source"] for s in db.sources()]
