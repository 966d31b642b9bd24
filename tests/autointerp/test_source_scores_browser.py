"""The source page's score histograms (``/source/{source}``) in a real browser: Playwright driving
Debian's chromium. The planted features are explained by the ``tokens`` explainer and scored by the
lexical judge with the shuffled control; the page must draw, per scorer, exactly the stored scores
and controls as SVG bars (no script, no image request) and trip no CSP violation."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "features"))
from features_helpers import running_server  # noqa: E402

from mechscope.autointerp import LexicalJudge, ScoreContext, explain_features, score_features
from mechscope.autointerp.explainers import TokensExplainer
from mechscope.autointerp.planted import PLANTED, planted_examples, write_planted_db
from mechscope.features.db import open_db
from mechscope.server import create_app

CHROMIUM = "/usr/bin/chromium"
SCORERS = ["detection", "fuzzing", "simulation"]


@pytest.fixture(scope="module")
def scored_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scores") / "planted.db"
    feats = planted_examples()
    write_planted_db(str(path), feats)
    with open_db(str(path)) as db:
        n = len(feats)
        explain_features(db, "planted", range(n), TokensExplainer(), quiet=True)
        ctx = ScoreContext(LexicalJudge())
        score_features(db, "planted", range(n), SCORERS, ctx, quiet=True)
    return path


@pytest.fixture(scope="module")
def base_url(scored_db: Path) -> Iterator[str]:
    yield from running_server(create_app(str(scored_db)))


def _bar_counts(titles: list[str], kind: str) -> int:
    return sum(int(t.rsplit(": ", 1)[1]) for t in titles if t.startswith(kind + " ["))


def test_source_page_draws_every_score_and_control(base_url: str, scored_db: Path) -> None:
    import httpx

    html = httpx.get(f"{base_url}/source/planted").text
    assert "<script>" not in html  # inline scripts would break the CSP
    with open_db(str(scored_db)) as db:
        rows = db.score_values("planted")
    for scorer in SCORERS:
        block = html.split(f'data-scorer="{scorer}"', 1)[1].split("</figure>", 1)[0]
        titles = re.findall(r"<title>([^<]*)</title>", block)
        own = [r for r in rows if r["scorer"] == scorer]
        assert len(own) == len(PLANTED)
        assert _bar_counts(titles, "explanation") == len(own)
        assert _bar_counts(titles, "control") == sum(r["control"] is not None for r in own)
        mean = sum(r["value"] for r in own) / len(own)
        assert f"mean {mean:.3f}" in block


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium")
def test_source_page_histograms_in_chromium(base_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    console: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: console.append(m.text))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"{base_url}/source/planted")
        hists = page.locator("#score-hists svg")
        assert hists.count() == len(SCORERS)
        for i in range(len(SCORERS)):
            box = hists.nth(i).bounding_box()
            assert box is not None and box["width"] > 100 and box["height"] > 50  # laid out
            assert hists.nth(i).locator("rect.own").count() >= 1
        caption = page.locator("#score-hists figcaption").first.inner_text()
        assert "shuffled control" in caption
        page.screenshot(path=str(tmp_path / "source-scores.png"), full_page=True)
        browser.close()
    assert not [m for m in console if "Content Security Policy" in m], console
    assert all(u.startswith(base_url) for u in requests), requests  # nothing from another host
