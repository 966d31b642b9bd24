"""The attention views from arrays: self-contained HTML (data round-trips, text escaped), PNG."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from mechscope import MechscopeError
from mechscope.viz.attention import (
    attention_figure,
    attention_html,
    attention_png,
    attention_widget,
    pack_patterns,
)
from mechscope.viz.html import escape, page, show_token

# tokens that break naive HTML: markup, entities, quotes, a closing script tag, whitespace
NASTY = [
    "<img src=x onerror=alert(1)>",
    "&amp;",
    '"q"',
    "a\nb",
    " lead",
    "</script>",
    "'",
    "",
    "\t",
    "é😀",
]
VOID = {"meta", "input", "br", "img", "hr", "link"}


class Parsed(HTMLParser):
    """Checks that tags nest and close; collects the embedded data and every script's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.data: list[dict] = []
        self.scripts: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []
        self._in_data = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        self.urls += [v for k, v in attrs.items() if k in ("src", "href") and v]
        if tag not in VOID:
            self.stack.append(tag)
        self._in_data = tag == "script" and "msattn-data" in (attrs.get("class") or "")

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "script":
            if self._in_data:
                self.data.append(json.loads(data))
            else:
                self.scripts.append(data)
        else:
            self.text.append(data)


def parse(html: str) -> Parsed:
    parser = Parsed()
    parser.feed(html)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    return parser


def unpack(data: dict) -> np.ndarray:
    """The embedded weights back to [layer head query_pos key_pos] (trailing zeros restored)."""
    n = len(data["tokens"])
    rows = data["rows"]
    out = np.zeros((len(rows), data["n_heads"], n, n))
    for layer, heads in enumerate(rows):
        for head, queries in enumerate(heads):
            for q, row in enumerate(queries):
                out[layer, head, q, : len(row)] = row
    return out / data["scale"]


def test_page_is_self_contained_and_round_trips(make_patterns) -> None:
    p = make_patterns(3, 4, len(NASTY))
    html = attention_html(NASTY, p, "view <of> & 'things'", layers=[2, 5, 9], initial=(1, 3))
    parsed = parse(html)
    assert parsed.urls == ["#s0"], "only the page's own table-of-contents anchor"
    assert "http" not in html and "://" not in html
    assert "@import" not in html and "url(" not in html and "fetch(" not in html
    [data] = parsed.data
    np.testing.assert_allclose(unpack(data), p, atol=0.5e-3 + 1e-9)
    assert data["layers"] == [2, 5, 9] and data["n_heads"] == 4
    assert data["initial"] == [1, 3, len(NASTY) - 1]
    assert data["tokens"] == [show_token(t) for t in NASTY]
    # each token is shown (escaped, invisibles marked) in both strips; raw markup never is
    text = "".join(parsed.text)
    for token in NASTY:
        assert html.count(f">{escape(show_token(token))}</span>") >= 2, token
        assert text.count(show_token(token)) >= 2
    assert "<img" not in html and html.count("</script>") == 2
    assert "␣lead" in text and "a↵b" in text and "∅" in text
    assert len(parsed.scripts) == 1 and "msattn" in parsed.scripts[0]


def test_pack_cuts_trailing_zeros_and_rounds() -> None:
    p = np.zeros((1, 2, 3, 3))
    p[0, 0] = [[1, 0, 0], [0.2344, 0.7656, 0], [0.0004, 0.9996, 0.0]]
    p[0, 1] = [[1, 0, 0], [0, 1, 0], [0.3, 0.3, 0.4]]
    assert pack_patterns(p) == [
        [[[1000], [234, 766], [0, 1000]], [[1000], [0, 1000], [300, 300, 400]]]
    ]


def test_two_views_on_one_page_do_not_share_ids(make_patterns) -> None:
    a = attention_widget(["x", "y"], make_patterns(1, 2, 2, seed=1))
    b = attention_widget(["x", "y"], make_patterns(1, 2, 2, seed=1))  # the same data
    parsed = parse(page("two", [("a", a), ("b", b)]))
    assert len(parsed.data) == 2
    ids = [re.search(r'<div class="msattn" id="([^"]+)"', part).group(1) for part in (a, b)]
    assert ids[0] != ids[1] and all(i.startswith("msattn-") for i in ids)


def test_size_guard_names_the_fix(make_patterns) -> None:
    p = make_patterns(2, 3, 40)
    with pytest.raises(MechscopeError, match="shorter prompt or fewer layers"):
        attention_html(["t"] * 40, p, max_values=1000)
    assert attention_html(["t"] * 40, p, max_values=3 * 2 * 40 * 41 // 2)  # the causal triangle


@pytest.mark.parametrize(
    ("tokens", "shape", "message"),
    [(["a", "b"], (2, 2, 2), r"\[layer head query_pos key_pos\]"),
     (["a"], (1, 1, 2, 2), "1 tokens for patterns over 2"),
     (["a", "b"], (1, 1, 2, 3), r"\[layer head query_pos key_pos\]"),
     ([], (1, 0, 0, 0), "no attention to show")],
)  # fmt: skip
def test_bad_arrays(tokens: list[str], shape: tuple, message: str) -> None:
    with pytest.raises(MechscopeError, match=message):
        attention_html(tokens, np.zeros(shape))


def test_nan_labels_and_initial_are_checked(make_patterns) -> None:
    p = make_patterns(2, 2, 3)
    with pytest.raises(MechscopeError, match="NaN"):
        attention_widget(["a", "b", "c"], np.full_like(p, np.nan))
    with pytest.raises(MechscopeError, match="3 layer labels for 2"):
        attention_widget(["a", "b", "c"], p, layers=[0, 1, 2])
    with pytest.raises(MechscopeError, match="initial head"):
        attention_widget(["a", "b", "c"], p, initial=(0, 2))


def test_png_grid_and_single_head(tmp_path, make_patterns) -> None:
    from PIL import Image

    p = make_patterns(3, 4, 6)
    tokens = ["<s>", " a", "&", "\n", " b", "c"]
    grid = attention_png(tokens, p, tmp_path / "grid.png", layer_labels=[4, 5, 6], title="t")
    one = attention_png(
        tokens, p, tmp_path / "one.png", layers=[5], heads=[2], layer_labels=[4, 5, 6]
    )
    for path in (grid, one):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
    assert Image.open(grid).size[1] > 2 * 100  # three rows of panels
    fig = attention_figure(tokens, p, layers=[5], heads=[2], layer_labels=[4, 5, 6])
    [ax] = [a for a in fig.axes if a.get_title()]
    assert ax.get_title() == "L5H2"
    np.testing.assert_array_equal(ax.images[0].get_array(), p[1, 2])
    assert [t.get_text() for t in ax.get_xticklabels()] == [show_token(t) for t in tokens]
    with pytest.raises(MechscopeError, match="layer 7 is not in the patterns"):
        attention_png(tokens, p, tmp_path / "x.png", layers=[7], layer_labels=[4, 5, 6])
    with pytest.raises(MechscopeError, match="head 4 is not in the patterns"):
        attention_png(tokens, p, tmp_path / "x.png", heads=[4])
