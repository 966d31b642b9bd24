"""End to end in a real browser: Playwright driving Debian's chromium (no browser download).

Search, open a feature, hover a token, try a text; the XSS payloads planted in the corpus (and in
an explanation and a score's error) show as text and never run; the pages trip no CSP violation.
Screenshots are kept in the test's temporary folder (``features-browser*/``)."""

from __future__ import annotations

import shutil

import pytest
from features_helpers import XSS, running_server

from mechscope.server import create_app

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium")


@pytest.fixture(scope="module")
def base_url(served_db, tiny):
    yield from running_server(create_app(str(served_db), model=tiny))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def test_search_feature_hover_and_try_a_text(browser, base_url, tmp_path_factory) -> None:
    shots = tmp_path_factory.mktemp("features-browser")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    dialogs: list[str] = []
    console: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("console", lambda m: console.append(m.text))

    page.goto(f"{base_url}/")
    page.fill("input[name=q]", "pets")
    page.click("button[type=submit]")
    page.wait_for_url("**/search?q=pets*")
    page.screenshot(path=str(shots / "search.png"))
    page.click("a[href='/feature/mlp%3A1/4']")
    page.wait_for_url("**/feature/mlp%3A1/4")
    assert "the word cat and other pets" in page.inner_text("body")

    token = page.locator("#top-examples .ftok.peak").first
    token.hover()
    tip = page.locator("#ftip")
    tip.wait_for(state="visible")
    assert token.get_attribute("data-v") in tip.inner_text()
    shaded = token.evaluate("el => getComputedStyle(el).backgroundColor")
    assert shaded not in ("rgba(0, 0, 0, 0)", "rgb(255, 255, 255)")  # the script shaded it
    page.screenshot(path=str(shots / "feature.png"), full_page=True)

    page.goto(f"{base_url}/feature/mlp:1/5")  # the explanation and a score error hold payloads
    body = page.inner_text("body")
    assert XSS[0] in body and XSS[1] in body
    assert page.locator("img").count() == 0
    page.goto(f"{base_url}/source/mlp:1")
    assert page.locator("svg.fscatter circle").count() == 80
    page.screenshot(path=str(shots / "source.png"))

    page.goto(f"{base_url}/infer")
    page.fill("#infer-text", f"t5 t17 {XSS[0]} t3 {XSS[1]} t9")
    page.select_option("#infer-source", "mlp:1")
    page.fill("#infer-limit", "5")
    page.click("#infer-form button")
    page.locator(".finfer-feature").first.wait_for()
    assert page.locator(".finfer-feature").count() == 5
    first = page.locator(".finfer-feature").first.inner_text()
    assert XSS[0] in first and XSS[1] in first
    page.screenshot(path=str(shots / "infer.png"), full_page=True)

    assert dialogs == []  # no payload ran
    assert page.evaluate("() => document.querySelectorAll('img, iframe').length") == 0
    assert not [m for m in console if "Content Security Policy" in m], console
    assert sorted(p.name for p in shots.iterdir()) == ["feature.png", "infer.png", "search.png", "source.png"]  # fmt: skip
    page.close()
