"""The circuit view's script in headless Chromium: the slider draws more or fewer of the strongest
edges, nodes no drawn edge touches fade, and hovering shows a score. Skipped without Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest

from conftest import hooked, toy_batch
from mechscope.circuits import attribute
from mechscope.circuits.graph import Graph
from mechscope.viz import page
from mechscope.viz.circuit import circuit_view

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")

DRIVE = """<pre id="out"></pre><script>
(function () {
  var root = document.querySelector(".mscirc"), res = { ready: root.dataset.ready, errors: [] };
  function drawn() {
    return Array.prototype.filter.call(root.querySelectorAll("path.mscirc-edge"), function (e) {
      return getComputedStyle(e).display !== "none";
    }).map(function (e) { return +e.dataset.rank; });
  }
  function lit() {
    return Array.prototype.filter.call(root.querySelectorAll("g.mscirc-node"), function (g) {
      return !g.classList.contains("mscirc-dim"); }).map(function (g) { return g.dataset.node; });
  }
  res.first = drawn(); res.first_nodes = lit();
  var range = root.querySelector("input.mscirc-range");
  range.value = "7"; range.dispatchEvent(new Event("input"));
  res.more = drawn(); res.number = root.querySelector("input.mscirc-number").value;
  res.count = root.querySelector(".mscirc-count").textContent;
  var number = root.querySelector("input.mscirc-number");
  number.value = "2"; number.dispatchEvent(new Event("change"));
  res.fewer = drawn(); res.fewer_nodes = lit();
  var top = root.querySelector('path.mscirc-edge[data-rank="0"]');
  top.dispatchEvent(new MouseEvent("mouseenter"));
  res.edge_tip = root.querySelector(".mscirc-readout").textContent;
  var node = root.querySelector("g.mscirc-node");
  node.dispatchEvent(new MouseEvent("mouseenter"));
  res.node_tip = root.querySelector(".mscirc-readout").textContent;
  res.node_name = node.dataset.node;
  res.errors = window.__errors;
  document.getElementById("out").textContent = JSON.stringify(res);
})();
</script>"""
ERRORS = (
    "<script>window.__errors = []; window.addEventListener('error', function (e) "
    "{ window.__errors.push(String(e.message)); });</script>"
)


def test_slider_and_hover(tmp_path) -> None:
    data = attribute(hooked("llama"), toy_batch(), method="eap").top_n(12).to_dict()
    doc = page("circuit", [("c", circuit_view(data, shown=4))])
    path = tmp_path / "c.html"
    path.write_text(
        doc.replace("<body>", "<body>" + ERRORS, 1).replace("</body>", DRIVE + "</body>")
    )
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", path.as_uri()]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="out">(.*?)</pre>', done.stdout, re.S)
    assert match and match.group(1), f"no result from the page; stderr: {done.stderr[-2000:]}"
    res = json.loads(html.unescape(match.group(1)))
    assert res["errors"] == [] and res["ready"] == "1"
    assert sorted(res["first"]) == [0, 1, 2, 3]
    assert sorted(res["more"]) == list(range(7)) and res["number"] == "7"
    assert res["count"] == "strongest 7 of 12 edges drawn"
    assert sorted(res["fewer"]) == [0, 1]
    edges = sorted(data["edges"], key=lambda e: -abs(e["score"]))
    g = Graph(**data["graph"])
    touched = {e["src"] for e in edges[:2]}
    touched.update(
        n
        for e in edges[:2]
        for n in (("logits",) if e["dst"] == "logits" else g.port_nodes(e["dst"]))
    )
    assert set(res["fewer_nodes"]) == touched
    top = edges[0]
    assert res["edge_tip"] == f"{top['src']} → {top['dst']}: score {top['score']:+.4g} (rank 1)"
    assert res["node_tip"].startswith(f"{res['node_name']}: ") and "edges in" in res["node_tip"]
