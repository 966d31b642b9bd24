"""The HTML page of anomaly scores: self-contained, escaped, most anomalous first."""

from __future__ import annotations

from mechscope.viz.anomaly import anomaly_page


def test_page_escapes_tokens_and_sorts_by_score() -> None:
    evil = "<script>alert(1)</script>"
    data = {
        "detector": "det",
        "kind": "mahalanobis",
        "fpr": 0.01,
        "threshold": 2.0,
        "inputs": [
            {"index": 0, "score": 1.0, "flagged": False, "layer": 2, "features": [],
             "token_scores": [{"token": " calm", "score": 1.0}]},
            {"index": 1, "score": 5.0, "flagged": True, "layer": 1,
             "features": [{"feature": 7, "term": 3.5}],
             "token_scores": [{"token": evil, "score": 5.0}]},
        ],
    }  # fmt: skip
    html = anomaly_page(data)
    assert evil not in html and "&lt;script&gt;" in html
    assert html.index("input 1") < html.index("input 0")
    assert "1 of\n2 inputs flagged" in html or "1 of 2 inputs flagged" in html.replace("\n", " ")
    assert 'src="http' not in html and 'href="http' not in html
