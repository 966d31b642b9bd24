"""The graph view: automatic supernodes from edge profiles, and the page's script in headless
Chromium (layout, hover, pin, hand-made and automatic supernodes). Skipped without Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest
import torch
from graphkit import A_TOKEN, opt_transcoders, planted_opt

from mechscope.graphs import GraphConfig, attribute
from mechscope.graphs.groups import auto_supernodes
from mechscope.viz.graph import graph_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
XSS = "<img src=x onerror=alert(1)>"


def _node(nid: str, kind: str = "cross layer transcoder") -> dict:
    return {"node_id": nid, "feature_type": kind}


def test_auto_supernodes_group_equal_profiles() -> None:
    nodes = [_node("E_1_0", "embedding"), _node("0_1_0"), _node("0_2_0"), _node("0_3_0"),
             _node("4_9_0", "logit")]  # fmt: skip
    links = [
        {"source": "E_1_0", "target": "0_1_0", "weight": 1.0},
        {"source": "E_1_0", "target": "0_2_0", "weight": 2.0},
        {"source": "0_1_0", "target": "4_9_0", "weight": 1.0},
        {"source": "0_2_0", "target": "4_9_0", "weight": 0.5},
        {"source": "0_3_0", "target": "4_9_0", "weight": -1.0},
    ]
    assert auto_supernodes({"nodes": nodes, "links": links}) == [["group 1", "0_1_0", "0_2_0"]]


DRIVE = """<pre id="out"></pre><script>
(function () {
  var root = document.querySelector(".msg-wrap"), res = {};
  var circles = root.querySelectorAll("circle.msg-node");
  res.circles = circles.length;
  res.paths = root.querySelectorAll("path.msg-link").length;
  circles[0].dispatchEvent(new MouseEvent("mouseenter", {clientX: 5, clientY: 5}));
  res.tip = root.querySelector(".msg-tip").textContent;
  res.tipExamples = root.querySelectorAll(".msg-tip .msg-example").length;
  res.peak = (root.querySelector(".msg-tip .msg-peak") || {}).textContent;
  res.imgs = document.querySelectorAll("img").length;
  circles[0].dispatchEvent(new MouseEvent("click"));
  res.pinned = root.querySelectorAll(".msg-pinned li").length;
  circles[1].dispatchEvent(new MouseEvent("click", {shiftKey: true}));
  circles[2].dispatchEvent(new MouseEvent("click", {shiftKey: true}));
  root.querySelector(".msg-group-btn").click();
  res.hand = root.querySelectorAll("rect.msg-group").length;
  root.querySelector(".msg-auto-btn").click();
  res.auto = root.querySelectorAll("rect.msg-group").length;
  res.errors = window.__errors;
  document.getElementById("out").textContent = JSON.stringify(res);
})();
</script>"""
ERRORS = (
    "<script>window.__errors = []; window.addEventListener('error', function (e) "
    "{ window.__errors.push(String(e.message)); });</script>"
)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
def test_view_in_chromium(tmp_path) -> None:
    model = planted_opt(0)
    tokens = torch.randint(2, 101, (6,), generator=torch.Generator().manual_seed(4))
    tokens[-1] = A_TOKEN
    g = attribute(model, opt_transcoders(model), tokens, GraphConfig(batch_size=64), quiet=True)
    payload = g.to_dict(node_threshold=0.95, edge_threshold=0.99)
    groups = auto_supernodes(payload)
    first = payload["nodes"][0]
    assert first["feature_type"] == "cross layer transcoder"
    examples = {  # as mechscope.graphs.examples.node_examples gives them (tested there)
        f"{first['layer']}_{first['feature_index']}": {
            "source": "sae:layer_0", "index": first["feature_index"],
            "explanation": "fires on A", "examples": [{"tokens": ["x", XSS, " A"],
            "values": [0.0, 0.5, 2.0], "position": 2, "value": 2.0}]}
    }  # fmt: skip
    doc = graph_page(payload, examples)
    path = tmp_path / "g.html"
    path.write_text(
        doc.replace("<body>", "<body>" + ERRORS, 1).replace("</body>", DRIVE + "</body>")
    )
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", path.as_uri()]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="out">(.*?)</pre>', done.stdout, re.S)
    assert match and match.group(1), f"no result from the page; stderr: {done.stderr[-2000:]}"
    res = json.loads(html.unescape(match.group(1)))
    assert res["errors"] == []
    assert res["circles"] == len(payload["nodes"]) and res["paths"] == len(payload["links"])
    assert payload["nodes"][0]["node_id"] in res["tip"]
    # the hover shows the feature database's examples, as text (the payload stays inert)
    assert "sae:layer_0" in res["tip"] and "fires on A" in res["tip"] and XSS in res["tip"]
    assert res["tipExamples"] == 1 and res["peak"] == " A" and res["imgs"] == 0
    assert res["pinned"] == 1 and res["hand"] == 1 and res["auto"] == len(groups)
