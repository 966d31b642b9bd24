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

pytestmark = pytest.mark.skipif(
    shutil.which("pdftoppm") is None or shutil.which("pdfinfo") is None,
    reason="needs poppler-utils (pdftoppm, pdfinfo)",
)


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


def test_pdf_text_has_the_sections(full_audit: Any) -> None:
    if shutil.which("pdftotext") is None:
        pytest.skip("needs pdftotext")
    text = subprocess.run(["pdftotext", str(full_audit.pdf), "-"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    assert "1. Scope and model identity" in text and "10. Reproducibility manifest" in text
    assert "Completeness: 10 / 10" in text
