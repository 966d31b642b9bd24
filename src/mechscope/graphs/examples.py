"""Feature-database examples for the feature nodes of a graph (what the graph view's hover shows).

The features of layer ``L`` are those of the database source that reads the transcoders' input
site ``blocks.L.mlp.hook_in`` with as many features as the transcoders: a per-layer transcoder
set in mechscope's layout (``DIR/layer_L``) gives them with ``mechscope features build --source
sae:DIR/layer_0 --source sae:DIR/layer_1 ...`` (sources ``sae:layer_0``, ...). When several
sources read one layer's site, a pattern with ``{layer}`` (``sae:layer_{layer}``) names them.
Values are the database's (a latent's activation times the length of its decoder row).
"""

from __future__ import annotations

from typing import Any

from mechscope.errors import MechscopeError
from mechscope.features import FeatureDB, FeatureNotFound
from mechscope.graphs.transcoders import in_site

__all__ = ["layer_sources", "node_examples"]

BEFORE, AFTER = 8, 2  # tokens kept around an example's maximum


def _feature_layers(payload: dict[str, Any]) -> dict[int, int]:
    """``{layer: largest feature index}`` of the graph's feature nodes."""
    out: dict[int, int] = {}
    for n in payload.get("nodes", []):
        if n.get("feature_type") == "cross layer transcoder":
            layer = int(n["layer"])
            out[layer] = max(out.get(layer, 0), int(n["feature_index"]))
    return out


def layer_sources(
    db: FeatureDB, layers: dict[int, int], pattern: str | None = None
) -> dict[int, str]:
    """The source of each layer in ``layers`` (``{layer: largest feature index}``): ``pattern``
    formatted with the layer, or the one latent source reading ``blocks.L.mlp.hook_in``.
    Layers without a source are left out; a source too small for the graph is an error."""
    sources = {s["source"]: s for s in db.sources()}
    out = {}
    for layer, top in sorted(layers.items()):
        if pattern is not None:
            name = pattern.format(layer=layer)
            if name not in sources:
                raise MechscopeError(
                    f"the feature database has no source {name!r} (from {pattern!r}); "
                    f"its sources: {', '.join(sources) or 'none'}"
                )
            found = [name]
        else:
            found = [
                s["source"]
                for s in sources.values()
                if s["kind"] == "latent" and s["hook_name"] == in_site(layer)
            ]
            if len(found) > 1:
                raise MechscopeError(
                    f"several database sources read {in_site(layer)} ({', '.join(found)}): "
                    "name them with a pattern, e.g. --features-source 'sae:layer_{layer}'"
                )
        if found:
            if sources[found[0]]["n_features"] <= top:
                raise MechscopeError(
                    f"the database source {found[0]} has {sources[found[0]]['n_features']} "
                    f"features but the graph has feature {top} at layer {layer}: build the "
                    "database from the graph's transcoders"
                )
            out[layer] = found[0]
    if layers and not out:
        raise MechscopeError(
            "the feature database has no source reading the transcoders' sites "
            f"({in_site(min(layers))}, ...): build it with --source sae:DIR/layer_L per layer"
        )
    return out


def _trim(ex: Any) -> dict[str, Any]:
    lo = max(0, ex.position - BEFORE)
    hi = min(len(ex.tokens), ex.position + AFTER + 1)
    return {"tokens": ex.tokens[lo:hi], "values": ex.values[lo:hi],
            "position": ex.position - lo, "value": ex.value}  # fmt: skip


def node_examples(
    db: FeatureDB, payload: dict[str, Any], pattern: str | None = None, n: int = 3
) -> dict[str, dict[str, Any]]:
    """``{"LAYER_FEATURE": {"source", "index", "explanation", "examples"}}`` for the feature
    nodes of a graph JSON: the ``n`` top examples (cut to the tokens around their maximum) and
    the first successful explanation. Features the database lacks are left out."""
    layers = _feature_layers(payload)
    sources = layer_sources(db, layers, pattern)
    out: dict[str, dict[str, Any]] = {}
    for node in payload["nodes"]:
        if node.get("feature_type") != "cross layer transcoder":
            continue
        layer, idx = int(node["layer"]), int(node["feature_index"])
        key = f"{layer}_{idx}"
        if key in out or layer not in sources:
            continue
        try:
            examples = db.examples(sources[layer], idx, "top")[:n]
        except FeatureNotFound:
            continue
        texts = [e["text"] for e in db.explanations(sources[layer], idx) if e["status"] == "ok"]
        out[key] = {"source": sources[layer], "index": idx, "explanation": texts[0] if texts else "",
                    "examples": [_trim(e) for e in examples]}  # fmt: skip
    return out
