"""Feature-database examples in the graph view and stored graphs in the web UI, on the feature
tests' tiny Llama: its per-layer transcoders (mechscope's layout) built into a features database
(sources ``sae:layer_L``), a graph through the same transcoders, the hover's examples checked
against the transcoder activations recomputed on the stored windows."""

from __future__ import annotations

import json
import re

import pytest
import torch
from click.testing import CliRunner
from features_helpers import WORDS  # on the path through conftest.py
from graphkit import random_set

from mechscope.errors import MechscopeError
from mechscope.features import open_db
from mechscope.graphs import GraphConfig, attribute
from mechscope.graphs.examples import layer_sources, node_examples
from mechscope.graphs.tcfiles import load_transcoders, save_transcoders

PROMPT = " ".join(WORDS[3:14])


@pytest.fixture(scope="module")
def setup(fx, tiny, tmp_path_factory):
    """``(model, transcoders, tc folder, db path, graph payload)``."""
    from mechscope.features.build import BuildConfig, build_features

    root = tmp_path_factory.mktemp("graph-features")
    save_transcoders(random_set(tiny, d_sae=24).to(torch.float32), root / "tc")
    tcs = load_transcoders(root / "tc", tiny)
    sources = tuple(f"sae:{root / 'tc'}/layer_{i}" for i in range(tiny.dims.n_layers))
    cfg = BuildConfig(model=str(fx["model"]), sources=sources, corpus=str(fx["corpus"]),
                      n_tokens=1200, seq_len=16, batch_size=8, k=4, quantiles=2,
                      per_quantile=1, negatives=1)  # fmt: skip
    build_features(tiny, cfg, str(root / "features.db"), quiet=True)
    tokens = tiny.to_tokens(PROMPT)[0]
    g = attribute(tiny, tcs, tokens, GraphConfig(batch_size=64), quiet=True)
    payload = g.to_dict(node_threshold=0.9, edge_threshold=0.98, slug="g")
    return tiny, tcs, root / "tc", root / "features.db", payload


def _feature_nodes(payload):
    return [n for n in payload["nodes"] if n["feature_type"] == "cross layer transcoder"]


def test_hover_examples_are_the_layers_transcoder_activations(setup) -> None:
    """Each feature node's examples come from its own layer's source: the stored maximum equals
    the transcoder activation recomputed on the stored window (times the decoder row's length,
    the database's scale), and the cut window is the stored one around its maximum."""
    model, tcs, _, db_path, payload = setup
    db = open_db(str(db_path), readonly=True)
    ex = node_examples(db, payload)
    nodes = _feature_nodes(payload)
    assert len({n["layer"] for n in nodes}) >= 2
    keys = {f"{n['layer']}_{n['feature_index']}" for n in nodes}
    assert keys == set(ex)
    checked = 0
    for key, info in ex.items():
        layer, idx = (int(v) for v in key.split("_"))
        assert info["source"] == f"sae:layer_{layer}" and info["index"] == idx
        stored = db.examples(info["source"], idx, "top")
        assert len(info["examples"]) == min(3, len(stored))
        for cut, full in zip(info["examples"], stored):
            assert cut["tokens"][cut["position"]] == full.tokens[full.position]
            assert cut["values"][cut["position"]] == full.values[full.position] == cut["value"]
        for full in stored[:1]:
            site = f"blocks.{layer}.mlp.hook_in"
            _, cache = model.run_with_cache(torch.tensor([full.token_ids]), names=[site])
            pre = tcs.pre_activations(layer, cache[site][0].to(tcs.W_enc[layer].dtype))
            act = tcs.activate(layer, pre)[:, idx] * tcs.W_dec[layer][idx].norm()
            assert torch.allclose(act, torch.tensor(full.values, dtype=act.dtype), atol=1e-4)
            assert full.value == pytest.approx(float(act[1:].max()), abs=1e-4)
            checked += 1
    assert checked >= 3


def test_sources_by_pattern_and_one_line_errors(setup) -> None:
    *_, db_path, payload = setup
    db = open_db(str(db_path), readonly=True)
    layers = {0: 3, 1: 5}
    assert layer_sources(db, layers) == layer_sources(db, layers, "sae:layer_{layer}")
    with pytest.raises(MechscopeError, match="no source 'sae:nope_0'"):
        layer_sources(db, layers, "sae:nope_{layer}")
    with pytest.raises(MechscopeError, match="has 24 features but the graph has feature 30"):
        layer_sources(db, {1: 30})
    with pytest.raises(MechscopeError, match="no source reading the transcoders' sites"):
        layer_sources(db, {7: 1})


def test_cli_html_hover_data(setup, fx, tmp_path) -> None:
    from mechscope.cli.main import cli

    _, _, tc, db_path, _ = setup
    out, page = tmp_path / "g.json", tmp_path / "g.html"
    args = ["graph", "-m", str(fx["model"]), "-t", str(tc), "-p", PROMPT, "--out", str(out),
            "--html", str(page), "--features", str(db_path), "-q"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    text = page.read_text()
    data = re.search(r'class="msg-examples">(.*?)</script>', text, re.S)
    assert data and "sae:layer_" in data.group(1)
    res = CliRunner().invoke(cli, args[:9] + ["--features", str(db_path)])
    assert res.exit_code == 2 and "pass --html too" in res.output
    assert "Traceback" not in res.output


def test_web_ui_lists_and_shows_stored_graphs(setup, tmp_path) -> None:
    from starlette.testclient import TestClient

    from mechscope.server import create_app

    *_, db_path, payload = setup
    folder = tmp_path / "graphs"
    folder.mkdir()
    (folder / "ioi.json").write_text(json.dumps(payload))
    (folder / "other.json").write_text('{"not": "a graph"}')
    client = TestClient(create_app(str(db_path), graphs=str(folder)))
    listed = client.get("/api/graphs").json()["graphs"]
    assert [g["name"] for g in listed] == ["ioi"]
    assert listed[0]["nodes"] == len(payload["nodes"])
    assert client.get("/api/graphs/ioi").json() == payload
    assert "/graph/ioi" in client.get("/graphs").text
    page = client.get("/graph/ioi")
    assert page.status_code == 200
    assert '<script src="/assets/graph.js">' in page.text
    for tag in re.findall(r"<script[^>]*>", page.text):  # the CSP allows no inline script
        assert "src=" in tag or 'type="application/json"' in tag
    shown = json.loads(re.search(r'class="msg-examples">(.*?)</script>', page.text, re.S)[1])
    want = node_examples(open_db(str(db_path), readonly=True), payload)
    assert shown == json.loads(json.dumps(want))
    assert client.get("/assets/graph.js").status_code == 200
    for bad in ("/graph/other", "/graph/..%2Fioi", "/api/graphs/nope"):
        assert client.get(bad).status_code == 404
    plain = TestClient(create_app(str(db_path)))  # no --graphs: the list says how to add them
    assert "--graphs DIR" in plain.get("/graphs").text
    with pytest.raises(MechscopeError, match="no such folder"):
        create_app(str(db_path), graphs=str(tmp_path / "missing"))
