"""The audit on a tiny model with every input: ten sections, the compliance count, limitations
read off the results, features and screening, self-containment, links and escaping."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from conftest import PLANTED
from mechscope.audit import SECTION_TITLES

pytestmark = pytest.mark.xdist_group("audit")  # one worker builds the shared audit once

EXTERNAL = re.compile(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", re.IGNORECASE)


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[tuple[str, str | None]] = []  # (src, href of the enclosing link)
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
            self._href = a["href"]
        if tag == "img":
            self.images.append((a.get("src") or "", self._href))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._href = None


def test_ten_sections_and_full_completeness(full_audit: Any, full_record: dict) -> None:
    html = Path(full_audit.html).read_text("utf-8")
    for i, title in enumerate(SECTION_TITLES, 1):
        assert f"<h2>{i}. {title}</h2>" in html
    assert full_record["compliance"]["present"] == 10
    assert full_record["compliance"]["required"] == 10
    assert "Completeness: <b>10 / 10</b>" in html
    items = {i["item"]: i["covered_by"] for i in full_record["compliance"]["framework"]}
    assert items["NIST MEASURE 2.9"] == [4, 5] and items["EU AI Act Annex IV 2(b)"]
    assert items["EU AI Act Annex IV 3"] == [2, 6, 7, 8, 10]


def test_limitations_come_from_the_results(full_record: dict) -> None:
    topics = {lim["topic"]: lim["text"] for lim in full_record["limitations"]}
    # the random tiny model does not do IOI, and its vocabulary cannot express induction
    assert "fails this task" in topics["task ioi"]
    assert "not analysed" in topics["task induction"]
    # the detector separates off-vocabulary text but not a second draw of the same text
    sets = full_record["anomaly"]["sets"]
    assert sets["ood"]["vs_clean"]["auroc"] > 0.95 and "detector on ood" not in topics
    assert sets["same"]["vs_clean"]["auroc"] < 0.6 and "near chance" in topics["detector on same"]
    assert f"{sets['same']['vs_clean']['auroc']:.2f}" in topics["detector on same"]


def test_findings_validation_and_screening(full_record: dict) -> None:
    top = full_record["features"]["top"]
    assert [(r["index"], r["score"]) for r in top] == sorted(
        ((i, s) for i, (_, s) in PLANTED.items()), key=lambda r: -r[1]
    )
    v = full_record["validation"]["ioi"]
    assert len(v["random_faithfulness"]) == 2 and len(v["ablation"]["controls"]) == 2
    a = v["ablation"]
    assert a["change_ci"][0] - 1e-6 <= a["change"] <= a["change_ci"][1] + 1e-6
    assert 0 < a["p_vs_controls"] <= 1
    assert v["n_edges"] == full_record["tasks"]["ioi"]["circuit"]["n_edges"]
    assert full_record["anomaly"]["sets"]["ood"]["flagged"] == 24
    row = full_record["compress"]["rows"][0]
    assert row["task"] == "ioi" and abs(row["effective_bits"] - 4.5) < 1e-6
    assert full_record["manifest"]["seeds"] == {
        "controls, probes, compression": 0,
        "task prompts": 0,
    }
    # the probe's rows are read with the schema ProbeResult.to_dict writes
    sites = full_record["probes"]["sites"]
    assert len(sites) == 2 and any(m["finding"] == "4 (probes)" for m in full_record["methods"])
    weak = {f"probe {s['site']}" for s in sites if s["selectivity"] < 0.05}
    assert weak == {
        x["topic"] for x in full_record["limitations"] if x["topic"].startswith("probe")
    }
    hashed = {d["data"] for d in full_record["manifest"]["data"]}
    assert {"task ioi", "feature database features.db", "screening set ood"} <= hashed


def test_self_contained_and_links_exist(full_audit: Any) -> None:
    path = Path(full_audit.html)
    html = path.read_text("utf-8")
    assert not EXTERNAL.search(html.replace('xmlns="http://www.w3.org/2000/svg"', ""))
    assert "<link" not in html and not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)
    parser = Links()
    parser.feed(html)
    files = [h for h in parser.links if not h.startswith("#")]
    assert len(files) > 15
    for href in files:
        assert (path.parent / href).is_file(), href
    # every embedded figure is a data URI inside a link to its PNG (or its section's artefacts)
    linked = [(src, href) for src, href in parser.images if href]
    assert len(linked) >= 4 and all(src.startswith("data:image/png;base64,") for src, _ in linked)
    assert all(href.endswith(".png") for _, href in linked)
    for src, _ in parser.images:
        assert src.startswith("data:"), src


def test_model_and_user_strings_are_escaped(full_audit: Any) -> None:
    html = Path(full_audit.html).read_text("utf-8")
    assert "<script>alert" not in html and "alert(1)</script>" not in html
    safe = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"tiny {safe}" in html  # the model's name (section 1 and the title)
    assert f"a test {safe}" in html  # the intended use
    assert f"Mary {safe} John" in html  # a screened input, shown among the top scores


def test_count_when_inputs_are_missing(tiny, corpus, tmp_path: Path) -> None:
    import json

    from mechscope.audit import AuditConfig, build_audit

    config = AuditConfig(tasks=("induction",), findings=("probes",), corpus=corpus, probe_layers=1)
    files = build_audit(tiny, tmp_path, config, pdf=False, quiet=True)
    record = json.loads(files.json.read_text("utf-8"))
    present = {r["number"]: r["present"] for r in record["compliance"]["sections"]}
    assert [n for n, p in present.items() if not p] == [5, 6, 7]  # no circuit, detector, compress
    assert record["compliance"]["present"] == 7 and files.pdf is None
    assert "Completeness: <b>7 / 10</b>" in files.html.read_text("utf-8")
    uncovered = [i["item"] for i in record["compliance"]["framework"] if not i["covered_by"]]
    assert uncovered == ["NIST MEASURE 2.7", "NIST MEASURE 2.13"]
    topics = {x["topic"] for x in record["limitations"]}
    assert {"anomaly screening", "compression sensitivity", "heads", "circuits"} <= topics
