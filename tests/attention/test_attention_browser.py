"""The attention view's script in a real browser: headless Chromium runs the page, a test script
hovers tokens, switches the grid, picks a layer and head, and writes what the page shows.

Skipped when Chromium is not installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from mechscope.viz.attention import attention_widget
from mechscope.viz.html import page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)

ERRORS = (
    "<script>window.__errors = []; window.addEventListener('error', function (e) "
    "{ window.__errors.push(String(e.message)); });</script>"
)
DRIVE = """<pre id="out"></pre><script>
(function () {
  var roots = document.querySelectorAll(".msattn"), r = roots[1];
  function toks(root, side) { return root.querySelectorAll(".msattn-" + side + " .msattn-tok"); }
  function ws(root, side) {
    return Array.prototype.map.call(toks(root, side), function (e) { return e.dataset.w; });
  }
  function fire(el, type) { el.dispatchEvent(new MouseEvent(type)); }
  function change(el, value) { el.value = value; el.dispatchEvent(new Event("change")); }
  var res = { ready: [roots[0].dataset.ready, r.dataset.ready] };
  res.initial = ws(r, "k");
  fire(toks(r, "q")[3], "mouseenter");
  res.q3 = ws(r, "k");
  res.q3_marked = toks(r, "q")[3].classList.contains("msattn-on");
  fire(toks(r, "k")[1], "mouseenter");
  res.k1 = ws(r, "q");
  res.thumbs_layer = r.querySelectorAll(".msattn-grid canvas").length;
  var all = r.querySelector('input.msattn-mode[value="all"]');
  all.checked = true; all.dispatchEvent(new Event("change"));
  res.thumbs_all = r.querySelectorAll(".msattn-grid canvas").length;
  change(r.querySelector("select.msattn-layer"), "2");
  change(r.querySelector("select.msattn-head"), "1");
  fire(toks(r, "q")[4], "mouseenter");
  res.picked = ws(r, "k");
  res.readout = r.querySelector(".msattn-readout").textContent;
  res.selected = Array.prototype.map.call(
    r.querySelectorAll(".msattn-grid canvas.msattn-sel"), function (c) { return c.title; });
  var thumb = r.querySelector('.msattn-grid canvas[title="L7H0"]');
  var px = thumb.getContext("2d").getImageData(1, 4, 1, 1).data;  // key 1, query 4
  res.thumb_pixel = [px[0], px[1], px[2]];
  var sq = r.querySelector("input.msattn-sqrt");
  sq.checked = true; sq.dispatchEvent(new Event("change"));
  thumb = r.querySelector('.msattn-grid canvas[title="L7H0"]');
  px = thumb.getContext("2d").getImageData(1, 4, 1, 1).data;
  res.sqrt_pixel = [px[0], px[1], px[2]];
  res.sqrt_weights = ws(r, "k");
  fire(thumb.parentNode, "click");
  res.after_click = r.querySelector(".msattn-readout").textContent;
  res.big = r.querySelector(".msattn-big canvas").width > 0;
  res.first_thumbs = roots[0].querySelectorAll(".msattn-grid canvas").length;
  res.first = ws(roots[0], "k");
  res.errors = window.__errors;
  document.getElementById("out").textContent = JSON.stringify(res);
})();
</script>"""


def run_page(tmp_path, body: str) -> dict:
    path = tmp_path / "view.html"
    path.write_text(page("test", [("a", body)]).replace("<body>", "<body>" + ERRORS, 1))
    path.write_text(path.read_text().replace("</body>", DRIVE + "</body>"))
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom"]  # fmt: skip
    done = subprocess.run([*args, path.as_uri()], capture_output=True, text=True, timeout=120)
    match = re.search(r'<pre id="out">(.*?)</pre>', done.stdout, re.S)
    assert match and match.group(1), f"no result from the page; stderr: {done.stderr[-2000:]}"
    return json.loads(html.unescape(match.group(1)))


def close(shown: list[str], expected: np.ndarray) -> bool:
    return len(shown) == len(expected) and np.allclose(
        [float(x) for x in shown], expected, atol=0.5e-3 + 1e-9
    )


def test_the_view_runs_and_shows_the_weights(tmp_path, make_patterns) -> None:
    tokens = ["<s>", " When", "&", "\n", ' "x"', "</script>"]
    p = make_patterns(3, 2, 6, seed=3)
    other = make_patterns(1, 2, 6, seed=4)
    body = attention_widget(tokens, other) + attention_widget(
        tokens, p, layers=[5, 6, 7], initial=(1, 0)
    )
    res = run_page(tmp_path, body)
    assert res["errors"] == [] and res["ready"] == ["1", "1"]
    assert close(res["initial"], p[1, 0, -1])  # the last query of the initial head
    assert close(res["q3"], p[1, 0, 3]) and res["q3_marked"]  # where query 3 attends
    assert close(res["k1"], p[1, 0, :, 1])  # who attends to key 1
    assert res["thumbs_layer"] == 2 and res["thumbs_all"] == 3 * 2
    assert close(res["picked"], p[2, 1, 4]) and res["readout"].startswith("L7H1:")
    assert res["selected"] == ["L7H1"]
    v = round(p[2, 0, 4, 1] * 1000) / 1000  # thumbnails use heat_color's white-to-blue scale
    expected = [round(255 - 189 * v), round(255 - 122 * v), round(255 - 11 * v)]
    assert np.abs(np.subtract(res["thumb_pixel"], expected)).max() <= 1
    v = np.sqrt(v)  # the square-root colour scale changes colours, not the numbers shown
    expected = [round(255 - 189 * v), round(255 - 122 * v), round(255 - 11 * v)]
    assert np.abs(np.subtract(res["sqrt_pixel"], expected)).max() <= 1
    assert res["sqrt_weights"] == res["picked"]
    assert res["after_click"].startswith("L7H0") and res["big"]
    # the first view on the page is untouched by the second's events
    assert res["first_thumbs"] == 2 and close(res["first"], other[0, 0, -1])
