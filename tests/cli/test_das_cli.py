"""``mechscope das`` and ``mechscope circuit --mib --stability`` on a tiny saved model."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mechscope.cli.main import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_das_json_and_heatmap(tiny_folder: Path, task_file: Path, tmp_path: Path) -> None:
    out, html = tmp_path / "d.json", tmp_path / "d.html"
    eight = tmp_path / "eight.jsonl"  # four copies of the two pairs: 2 held out
    eight.write_text(task_file.read_text() * 4)
    result = run(
        "das", "-m", str(tiny_folder), "-t", str(eight), "--layers", "0,2",
        "--positions", "last", "--steps", "3", "--json", str(out), "--html", str(html), "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["sites"] == ["blocks.0.hook_resid_pre", "blocks.2.hook_resid_pre"]
    assert len(data["iia"]) == 2 and all(0 <= v <= 1 for row in data["iia"] for v in row)
    assert len(data["best"]["test_iia_ci"]) == 2 and "<img" in html.read_text()
    assert "best:" in result.output
    control = data["control"]  # a random subspace of the best cell's size, on the same pairs
    assert control["method"] == "random" and control["k"] == data["best"]["k"]
    assert 0 <= control["test_iia"] <= 1 and 0 < control["p_vs_random"] <= 1
    assert "control: a random 1-d subspace there" in result.output


def test_das_bad_input_is_one_line(tiny_folder: Path, task_file: Path) -> None:
    result = run("das", "-m", str(tiny_folder), "-t", str(task_file), "--dim", "999", "-q")
    assert result.exit_code == 2
    assert "larger than site" in result.output and result.output.count("\n") == 1
    result = run("das", "-m", str(tiny_folder), "-t", str(task_file), "--positions", "x", "-q")
    assert result.exit_code == 2 and "unknown position 'x'" in result.output
    assert result.output.count("\n") == 1


def test_das_fixed_methods_and_png(tiny_folder: Path, task_file: Path, tmp_path: Path) -> None:
    out, png, html = tmp_path / "f.json", tmp_path / "f.png", tmp_path / "f.html"
    eight = tmp_path / "eight.jsonl"
    eight.write_text(task_file.read_text() * 4)
    for method in ("full", "pca"):
        result = run(
            "das", "-m", str(tiny_folder), "-t", str(eight), "--layers", "0,1", "--method", method,
            "--positions", "0,last", "--json", str(out), "--png", str(png), "--html", str(html),
            "-q",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        data = json.loads(out.read_text())
        assert data["method"] == method and data["positions"] == [0, "last"]
        assert {r["method"] for r in data["results"]} == {method}
        assert ("control" in data) == (method == "pca")  # the whole vector has no control
        assert png.read_bytes()[:4] == b"\x89PNG" and "95% interval" in html.read_text()
    assert data["results"][0]["k"] == 1 and data["results"][0]["train_iia"] is None


def test_circuit_mib_and_stability(tiny_folder: Path, task_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    result = run(
        "circuit", "-m", str(tiny_folder), "-t", str(task_file), "--method", "eap",
        "--edges", "5", "--mib", "--stability", "2", "--no-curve", "--json", str(out), "-q",
        "--ungroup-kv", "--mib-json", str(tmp_path / "mib.json"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    mib = data["mib"]
    assert len(mib["faithfulness_signed"]) == 10 and mib["faithfulness_signed"][-1] == 1.0
    assert mib["cpr_ci"][0] <= mib["cpr_ci"][1]
    assert data["stability"]["n_boot"] == 2 and 0 <= data["stability"]["mean_jaccard"] <= 1
    mib_json = json.loads((tmp_path / "mib.json").read_text())
    assert sum(e["in_graph"] for e in mib_json["edges"].values()) == 5
    assert "MIB: CPR" in result.output and "stability: mean Jaccard" in result.output
    acdc = run("circuit", "-m", str(tiny_folder), "-t", str(task_file), "--method", "acdc",
               "--mib", "--no-curve", "--json", str(out), "-q")  # fmt: skip
    assert acdc.exit_code == 0, acdc.output  # ACDC's measurements rank every edge
    mib = json.loads(out.read_text())["mib"]
    assert mib["method"] == "acdc" and mib["faithfulness_abs"][-1] == 1.0
