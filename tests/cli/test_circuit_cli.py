"""``mechscope circuit``, ``dla`` and ``ablate`` on a tiny saved model with a user JSONL task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from mechscope.cli.main import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_circuit_json_and_full_graph_faithfulness(
    tiny_folder: Path, task_file: Path, tmp_path, method: str
) -> None:
    out, html = tmp_path / "c.json", tmp_path / "c.html"
    result = run(
        "circuit", "-m", str(tiny_folder), "-t", str(task_file), "--method", method,
        "--threshold", "0", "--json", str(out), "--html", str(html), "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    for key in ("n_edges", "total_edges", "faithfulness", "nodes", "edges", "curve"):
        assert key in data
    assert data["n_edges"] == data["total_edges"] == len(data["edges"])
    assert set(data["edges"][0]) >= {"src", "dst", "score"}
    assert data["faithfulness"] == pytest.approx(1.0, abs=1e-4)  # the whole graph is the model
    assert "<svg" in html.read_text() and "http" not in html.read_text().replace(
        "http://www.w3.org", ""
    )


def test_circuit_rejects_edges_and_threshold(tiny_folder: Path, task_file: Path) -> None:
    result = run(
        "circuit",
        "-m",
        str(tiny_folder),
        "-t",
        str(task_file),
        "--edges",
        "3",
        "--threshold",
        "0.1",
    )
    assert result.exit_code == 2 and "either --edges" in result.stderr


def test_dla_sums_to_the_logit_difference(tiny_folder: Path, task_file: Path, tmp_path) -> None:
    out = tmp_path / "d.json"
    result = run("dla", "-m", str(tiny_folder), "-t", str(task_file), "--json", str(out), "-q")
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["total"] == pytest.approx(data["logit_diff"], abs=1e-4)
    assert len(data["heads"]) == 3 and len(data["top_heads"]) == 10


def test_ablate_everything_kept_changes_nothing(tiny_folder: Path, task_file: Path, tmp_path):
    out = tmp_path / "a.json"
    nodes = "L0,L1,L2"
    result = run(
        "ablate", "-m", str(tiny_folder), "-t", str(task_file), "--nodes", nodes,
        "--keep-only", "--json", str(out), "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["after"] == pytest.approx(data["before"], abs=1e-5)
    result = run("ablate", "-m", str(tiny_folder), "-t", str(task_file), "--nodes", "L7H0")
    assert result.exit_code == 2 and result.stderr.startswith("error: ")


def test_circuit_ungrouped_graph_and_curve_at_edge_counts(
    tiny_folder: Path, task_file: Path, tmp_path
) -> None:
    from mechscope import HookedModel
    from mechscope.circuits import Graph
    from mechscope.models.tiny import tiny_model

    dims = HookedModel(tiny_model("llama")).dims  # the model saved in tiny_folder
    totals = {}
    for flag in ("", "--ungroup-kv"):
        out = tmp_path / f"c{flag}.json"
        args = ["circuit", "-m", str(tiny_folder), "-t", str(task_file), "--method", "eap"]
        args += ["--edges", "20", "--curve-edges", "5,40,80", "--json", str(out), "-q"]
        result = run(*args, *([flag] if flag else []))
        assert result.exit_code == 0, result.stderr
        data = json.loads(out.read_text())
        totals[flag] = data["total_edges"]
        assert [p["n_edges"] for p in data["curve"]] == [5, 40, 80]
        assert data["n_edges"] == 20 and len(data["edges"]) == 20
        assert "80 edges: faithfulness" in result.stdout
    assert totals[""] == Graph.from_dims(dims).n_edges
    assert totals["--ungroup-kv"] == Graph.from_dims(dims, ungroup_kv=True).n_edges > totals[""]
    result = run("circuit", "-m", str(tiny_folder), "-t", str(task_file), "--curve-edges", "a,b")
    assert result.exit_code == 2


def test_ablate_json_is_the_result_schema(tiny_folder: Path, task_file: Path, tmp_path) -> None:
    out = tmp_path / "a.json"
    args = ["ablate", "-m", str(tiny_folder), "-t", str(task_file), "--nodes", "L1H0,MLP2"]
    result = run(*args, "--json", str(out), "-q")
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["nodes"] == "L1H0,MLP2" and data["kind"] == "zero"
    assert data["change"] == pytest.approx(data["after"] - data["before"])
    assert data["change_ci"][0] - 1e-5 <= data["change"] <= data["change_ci"][1] + 1e-5
    assert 0 < data["p"] <= 1 and "95% interval [" in result.stdout
    per_prompt = data["per_prompt_after"]
    assert sum(per_prompt) / len(per_prompt) == pytest.approx(data["after"], abs=1e-5)
