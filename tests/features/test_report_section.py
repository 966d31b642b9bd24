"""The report's feature-database section on the tiny model: it builds features.db beside the
report, and what it shows is what the database holds."""

from __future__ import annotations

from mechscope.corpus import load_corpus
from mechscope.features import open_db
from mechscope.report.context import ReportConfig, ReportContext
from mechscope.report.features_section import features_section


def test_section_builds_a_database_and_says_how_to_serve_it(tiny, fx, tmp_path) -> None:
    ctx = ReportContext(config=ReportConfig(), out_dir=tmp_path)
    html = features_section(tiny, ctx, corpus=load_corpus(str(fx["corpus"])))
    data = ctx.data["features"]
    assert f"mechscope serve {tmp_path / 'features.db'}" in html
    with open_db(str(tmp_path / "features.db"), readonly=True) as db:
        assert [s["source"] for s in db.sources()] == ["attn:1", "mlp:1"]
        best = max(db.stats("mlp:1"), key=lambda s: s["max"])
        assert data["strongest"][0]["index"] == best["index"]
        assert data["strongest"][0]["max"] == best["max"]
    assert data["tokens"] > 0 and "skipped" not in data
