"""``mechscope patch`` on a tiny saved model with a user JSONL task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mechscope.cli.main import cli

CLEAN = "When Mary and John went to the store , John gave a drink to"
CORRUPT = "When John and Mary went to the store , Mary gave a drink to"


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_patch_json_keys_and_exact_endpoints(tiny_folder: Path, task_file: Path, tmp_path) -> None:
    out, html = tmp_path / "p.json", tmp_path / "p.html"
    result = run(
        "patch", "-m", str(tiny_folder), "-t", str(task_file), "--sweep", "resid_post",
        "--json", str(out), "--html", str(html), "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    for key in ("model", "task", "sweep", "method", "metric", "axes", "clean", "corrupt"):
        assert key in data
    assert data["axes"] == ["layer", "pos"] and data["method"] == "exact"
    values = data["normalized"]
    assert len(values) == 3 and len(values[0]) == 14
    # patching the clean final residual at the last position restores the clean metric exactly
    assert values[-1][-1] == pytest.approx(1.0, abs=1e-4)
    # positions before the first difference carry no information about it
    assert values[0][0] == pytest.approx(0.0, abs=1e-5)
    page = html.read_text()
    assert "data:image/png;base64," in page and "http" not in page


def test_patch_ci(tiny_folder: Path, task_file: Path, tmp_path) -> None:
    out = tmp_path / "ci.json"
    result = run(
        "patch", "-m", str(tiny_folder), "-t", str(task_file), "--sweep", "attn_head",
        "--ci", "0.9", "--json", str(out), "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["ci_level"] == 0.9 and len(data["ci_low"]) == len(data["values"])
    for lo, v, hi in zip(data["ci_low"][1], data["values"][1], data["ci_high"][1]):
        assert lo - 1e-5 <= v <= hi + 1e-5
    assert " [" in result.stdout  # the printed top effects carry their intervals
    assert "  p " in result.stdout  # and their p-values
    p, q = data["pvalue"], data["qvalue"]
    assert len(p) == len(data["values"]) and len(p[1]) == len(data["values"][1])
    flat = [(a, b) for ra, rb in zip(p, q) for a, b in zip(ra, rb) if a is not None]
    assert flat and all(0 < a <= 1 and a - 1e-9 <= b <= 1 for a, b in flat)  # q >= p (BH)
    bad = run("patch", "-m", str(tiny_folder), "-t", str(task_file), "--sweep", "attn_head",
              "--method", "attribution", "--ci", "0.9", "-q")  # fmt: skip
    assert bad.exit_code == 2 and "--ci needs --method exact" in bad.stderr


def test_patch_attribution_method(tiny_folder: Path, task_file: Path, tmp_path) -> None:
    paths = {m: tmp_path / f"{m}.json" for m in ("exact", "attribution")}
    for method, out in paths.items():
        result = run(
            "patch", "-m", str(tiny_folder), "-t", str(task_file), "--sweep", "attn_head",
            "--method", method, "--json", str(out), "-q",
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
    exact, approx = (json.loads(paths[m].read_text()) for m in ("exact", "attribution"))
    assert approx["method"] == "attribution_patching" and approx["axes"] == exact["axes"]
    assert approx["clean"] == pytest.approx(exact["clean"], abs=1e-5)
    assert approx["corrupt"] == pytest.approx(exact["corrupt"], abs=1e-5)
    assert len(approx["values"]) == len(exact["values"])
    assert approx["values"] != exact["values"]  # a first-order estimate, not the exact sweep


def test_patch_bad_input_is_one_line(tiny_folder: Path, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"clean": CLEAN, "corrupt": "When John", "answer": " Mary", "wrong": " John"})
    )
    result = run("patch", "-m", str(tiny_folder), "-t", str(bad), "--sweep", "resid_pre")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "sweeps by position need equal lengths" in result.stderr
    result = run("patch", "-m", str(tiny_folder), "-t", "nosuchtask", "--sweep", "resid_pre")
    assert result.exit_code == 2 and "unknown task" in result.stderr
