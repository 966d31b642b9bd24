"""The HTML helpers escape text, stay self-contained, and the progress bar hides when it should."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from mechscope.progress import bars_enabled, progress
from mechscope.viz.html import Cell, Markup, heat_color, page, save_png, show_token, table


def test_text_is_escaped_markup_is_not() -> None:
    html = table([["<script>x</script>", Cell('a"b', "#4285f4", "<t>"), Markup("<i>ok</i>")]])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'title="&lt;t&gt;"' in html and "a&#34;b" in html and "<i>ok</i>" in html
    doc = page("<T>", [("A & B", "<p>body</p>")])
    assert "<title>&lt;T&gt;</title>" in doc and "A &amp; B" in doc and "<p>body</p>" in doc


def test_heat_color_and_tokens() -> None:
    assert heat_color(0.0) == "#ffffff" and heat_color(1.0) == heat_color(5.0) == "#4285f4"
    assert heat_color(0.5, vmin=0.5, vmax=0.5) == "#ffffff"
    assert show_token(" a\n") == "␣a↵" and show_token("") == "∅"


def test_save_png(tmp_path) -> None:
    fig = Figure()
    fig.subplots().plot([0, 1])
    data = save_png(fig, tmp_path / "f.png").read_bytes()
    assert data.startswith(b"\x89PNG") and b"http" not in data


def test_progress_is_quiet_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not bars_enabled(quiet=True)
    monkeypatch.setenv("CI", "true")
    assert not bars_enabled()
    assert list(progress(range(3), desc="x")) == [0, 1, 2]
