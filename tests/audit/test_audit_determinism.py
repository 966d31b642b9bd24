"""The same config and seed give the same audit.html, byte for byte, but for the creation time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from conftest import full_config
from mechscope.audit import build_audit

pytestmark = pytest.mark.xdist_group("audit")  # one worker builds the shared audit once

STAMP = re.compile(r'<time id="created">[^<]*</time>')


def masked(path: Path) -> str:
    html = path.read_text("utf-8")
    assert len(STAMP.findall(html)) == 1  # exactly one timestamp field
    return STAMP.sub('<time id="created">T</time>', html)


def test_same_config_same_bytes(full_audit: Any, tiny, corpus, inputs, tmp_path: Path) -> None:
    again = build_audit(tiny, tmp_path, full_config(corpus, inputs), pdf=False,
                        created="2000-01-01 00:00:00 UTC")  # fmt: skip
    first, second = masked(Path(full_audit.html)), masked(again.html)
    assert first == second
    assert '<time id="created">2000-01-01 00:00:00 UTC</time>' in again.html.read_text("utf-8")
    # the artefacts are the same files too (PNGs and JSON), apart from the audit's own record
    old = Path(full_audit.html).parent
    for png in sorted(old.rglob("*.png")):
        assert png.read_bytes() == (tmp_path / png.relative_to(old)).read_bytes(), png
