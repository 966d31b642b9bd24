"""``mechscope toy superposition``: a short run writes HTML, PNG and JSON and prints a summary."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from mechscope.cli.main import cli


def run(*args: str):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return CliRunner().invoke(cli, list(args))
    finally:
        torch.set_num_threads(threads)


def test_toy_superposition_writes_pictures_and_summary(tmp_path) -> None:
    html, png, out = tmp_path / "s.html", tmp_path / "s.png", tmp_path / "s.json"
    result = run(
        "toy", "superposition", "--sparsity", "0,0.95", "--steps", "600", "--replicas", "2",
        "--phase-steps", "300", "--grid", "2", "--html", str(html), "--png", str(png), "--json", str(out), "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "5 features in 2 dimensions" in result.stdout
    assert "S = 0.95" in result.stdout and "pentagon: yes" in result.stdout
    assert "phase of feature 2" in result.stdout and "agreement" in result.stdout
    page = html.read_text()
    assert "Feature directions" in page and "Phase diagram" in page and "http" not in page
    assert png.read_bytes().startswith(b"\x89PNG")
    data = json.loads(out.read_text())
    assert data["sweep"]["sparsities"] == [0.0, 0.95]
    assert len(data["sweep"]["W"]) == 2 and len(data["sweep"]["W"][0]) == 2
    phases = data["phase_diagram"]
    assert phases["phase"] == phases["expected"] == [[0, 2], [1, 2]]  # the planted corners


def test_toy_superposition_bad_input_is_one_line() -> None:
    result = run("toy", "superposition", "--features", "3", "--hidden", "3", "--no-phase")
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    assert "smaller than n_features" in result.stderr
    result = run("toy", "superposition", "--sparsity", "a,b", "--no-phase")
    assert result.exit_code == 2 and "comma-separated" in result.stderr
