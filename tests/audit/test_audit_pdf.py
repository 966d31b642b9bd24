"""The PDF printed by headless Chromium: one page or more per section, none of them blank.

Pages are rendered to images with poppler's ``pdftoppm`` (Debian package poppler-utils)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mechscope.audit import SECTION_TITLES

pytestmark = [
    pytest.mark.xdist_group("audit"),  # one worker builds the shared audit once
    pytest.mark.skipif(
        shutil.which("pdftoppm") is None or shutil.which("pdfinfo") is None,
        reason="needs poppler-utils (pdftoppm, pdfinfo)",
    ),
]


def pages(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    line = next(x for x in info.stdout.splitlines() if x.startswith("Pages:"))
    return int(line.split()[1])


def test_pdf_pages_are_not_blank(full_audit: Any, tmp_path: Path) -> None:
    pdf = Path(full_audit.pdf)
    assert pdf.read_bytes()[:5] == b"%PDF-"
    n = pages(pdf)
    assert n >= 10  # every section starts a page when printed
    subprocess.run(["pdftoppm", "-r", "24", "-gray", "-png", str(pdf), str(tmp_path / "p")],
                   check=True)  # fmt: skip
    images = sorted(tmp_path.glob("p-*.png"))
    assert len(images) == n
    for image in images:
        ink = np.asarray(Image.open(image).convert("L")) < 200  # dark pixels: text and figures
        assert ink.mean() > 0.002, f"{image.name} is blank"


def test_each_section_starts_a_page(full_audit: Any) -> None:
    if shutil.which("pdftotext") is None:
        pytest.skip("needs pdftotext")
    pdf = str(full_audit.pdf)
    first_lines = []
    for i in range(1, pages(Path(pdf)) + 1):
        text = subprocess.run(["pdftotext", "-f", str(i), "-l", str(i), pdf, "-"],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
        first_lines.append(text.strip().splitlines()[0] if text.strip() else "")
        if "Completeness: 10 / 10" in text:
            assert first_lines[-1] == "9. Compliance mapping"
    starts = [first_lines.index(f"{n}. {t}") for n, t in enumerate(SECTION_TITLES, 1) if n > 1]
    assert starts == sorted(starts) and len(set(starts)) == 9
    assert first_lines[0].startswith("mechscope audit: tiny")  # section 1 follows the title
