"""The attention view's script under Node against a minimal DOM stub (runs where Chromium does
not): the same interactions as the browser test, checked against the patterns.

The stub knows only the selectors the script uses; a new selector fails loudly here. Skipped when
``node`` is not installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from mechscope.viz.attention import attention_widget

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")

STUB = r"""
const spec = JSON.parse(require("fs").readFileSync(0, "utf8"));
function El(tag, props) {
  const el = Object.assign({ tag, style: {}, dataset: {}, children: [], listeners: {},
                             parentNode: null, value: "", checked: false, textContent: "" }, props);
  const cls = new Set();
  el.classList = { toggle: (c, on) => (on ? cls.add(c) : cls.delete(c)), contains: (c) => cls.has(c),
                   add: (c) => cls.add(c) };
  el.addEventListener = (type, fn) => (el.listeners[type] = el.listeners[type] || []).push(fn);
  el.fire = (type) => (el.listeners[type] || []).forEach((fn) => fn({ target: el, clientX: 0,
                                                                       clientY: 0 }));
  el.appendChild = (c) => { c.parentNode = el; el.children.push(c); return c; };
  Object.defineProperty(el, "innerHTML", { set: () => { el.children = []; } });
  if (tag === "canvas") {
    el.pixels = null;
    const ctx = { measureText: (t) => ({ width: 7 * t.length }), fillRect() {}, fillText() {},
      strokeRect() {}, save() {}, restore() {}, rotate() {}, scale() {},
      createImageData: (w, h) => ({ width: w, data: new Uint8ClampedArray(4 * w * h) }),
      putImageData: (img) => { el.pixels = img; } };
    el.getContext = () => ctx;
    el.getBoundingClientRect = () => ({ left: 0, top: 0 });
  }
  return el;
}
const toks = (n) => Array.from({ length: n }, () => El("span"));
const grid = El("div");
const els = {
  "script.msattn-data": [El("script", { textContent: spec.data })],
  ".msattn-q .msattn-tok": toks(spec.n_tokens), ".msattn-k .msattn-tok": toks(spec.n_tokens),
  "select.msattn-layer": [El("select")], "select.msattn-head": [El("select")],
  ".msattn-readout": [El("span")], ".msattn-grid": [grid], ".msattn-big canvas": [El("canvas")],
  "input.msattn-sqrt": [El("input")],
  "input.msattn-mode": [El("input", { value: "layer", checked: true }), El("input", { value: "all" })],
  ".msattn-strip": [El("div"), El("div")],
};
function all(sel) {
  if (sel === ".msattn-grid canvas") { return grid.children.map((fig) => fig.children[0]); }
  if (!(sel in els)) { throw new Error("selector not stubbed: " + sel); }
  return els[sel];
}
const root = El("div");
root.querySelectorAll = all;
root.querySelector = (sel) => all(sel)[0];
global.window = { devicePixelRatio: 1 };
global.document = { currentScript: { closest: () => root }, createElement: (t) => El(t) };

const ws = (side) => els[".msattn-" + side + " .msattn-tok"].map((e) => e.dataset.w);
const res = {};
eval(spec.script);
res.ready = root.dataset.ready;
res.initial = ws("k");
els[".msattn-q .msattn-tok"][3].fire("mouseenter");
res.q3 = ws("k");
res.q3_marked = els[".msattn-q .msattn-tok"][3].classList.contains("msattn-on");
els[".msattn-k .msattn-tok"][1].fire("mouseenter");
res.k1 = ws("q");
els[".msattn-strip"][1].fire("mouseleave");  // back to the kept query (the last token)
res.left = ws("k");
res.thumbs_layer = all(".msattn-grid canvas").length;
const mode = els["input.msattn-mode"][1];
mode.checked = true; mode.fire("change");
res.thumbs_all = all(".msattn-grid canvas").length;
const layer = els["select.msattn-layer"][0], head = els["select.msattn-head"][0];
layer.value = "2"; layer.fire("change");
head.value = "1"; head.fire("change");
els[".msattn-q .msattn-tok"][4].fire("mouseenter");
res.picked = ws("k");
res.readout = els[".msattn-readout"][0].textContent;
res.selected = all(".msattn-grid canvas").filter((c) => c.classList.contains("msattn-sel"))
  .map((c) => c.title);
const thumb = all(".msattn-grid canvas").find((c) => c.title === "L7H0");
const o = 4 * (4 * thumb.pixels.width + 1);  // query 4, key 1
res.thumb_pixel = Array.from(thumb.pixels.data.slice(o, o + 3));
process.stdout.write(JSON.stringify(res));
"""


def script_and_data(widget: str) -> tuple[str, str]:
    data = re.search(r'class="msattn-data">(.*?)</script>', widget, re.S).group(1)
    script = re.search(r"<script>(.*?)</script></div>$", widget, re.S).group(1)
    return script, data


def close(shown: list[str], expected: np.ndarray) -> bool:
    return len(shown) == len(expected) and np.allclose(
        [float(x) for x in shown], expected, atol=0.5e-3 + 1e-9
    )


def test_the_script_under_node(make_patterns) -> None:
    p = make_patterns(3, 2, 6, seed=3)
    tokens = ["<s>", " When", "&", "\n", ' "x"', "</script>"]
    script, data = script_and_data(attention_widget(tokens, p, layers=[5, 6, 7], initial=(1, 0)))
    spec = json.dumps({"script": script, "data": data, "n_tokens": len(tokens)})
    done = subprocess.run(
        [NODE, "-e", STUB], input=spec, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(done.stdout)
    assert res["ready"] == "1"
    assert close(res["initial"], p[1, 0, -1]) and close(res["left"], p[1, 0, -1])
    assert close(res["q3"], p[1, 0, 3]) and res["q3_marked"]
    assert close(res["k1"], p[1, 0, :, 1])
    assert res["thumbs_layer"] == 2 and res["thumbs_all"] == 6
    assert close(res["picked"], p[2, 1, 4]) and res["readout"].startswith("L7H1:")
    assert res["selected"] == ["L7H1"]
    v = round(p[2, 0, 4, 1] * 1000) / 1000
    expected = [round(255 - 189 * v), round(255 - 122 * v), round(255 - 11 * v)]
    assert np.abs(np.subtract(res["thumb_pixel"], expected)).max() <= 1
