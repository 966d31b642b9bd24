"""``mechscope probe`` on a tiny saved model: JSON keys, views, and one-line errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from mechscope.cli.main import cli

NAMES = ["Mary", "John"]
FILLER = ["When", "and", "went", "to", "the", "store", "gave", "a", "drink"]


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def name_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 texts ending in Mary or John; the label is the last word (readable at every layer)."""
    rng = random.Random(0)
    rows = []
    for i in range(80):
        words = rng.choices(FILLER, k=rng.randint(2, 6)) + [NAMES[i % 2]]
        rows.append({"text": " ".join(words), "label": NAMES[i % 2]})
    path = tmp_path_factory.mktemp("probe") / "names.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_probe_json_html_and_png(tiny_folder: Path, name_file: Path, tmp_path: Path) -> None:
    out, html, png = tmp_path / "p.json", tmp_path / "p.html", tmp_path / "p.png"
    result = run(
        "probe", "-m", str(tiny_folder), "--data", str(name_file), "--site",
        "blocks.*.hook_resid_post", "--json", str(out), "--html", str(html), "--png", str(png),
        "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert {"model", "data", "site", "kind", "sites", "n_examples", "n_classes"} <= set(data)
    assert data["model"] == str(tiny_folder) and data["data"] == str(name_file)
    assert data["kind"] == "logistic" and data["n_examples"] == 80 and data["n_classes"] == 2
    assert [s["site"] for s in data["sites"]] == [f"blocks.{i}.hook_resid_post" for i in range(3)]
    for s in data["sites"]:  # the last token's identity is the label
        assert s["accuracy"] == 1.0 and s["cv_mean"] == 1.0 and s["baseline"] == 0.5
        assert s["selectivity"] == pytest.approx(s["accuracy"] - s["control_accuracy"])
    page = html.read_text()
    assert "<img" in page and "blocks.2.hook_resid_post" in page and "http" not in page
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "blocks.0.hook_resid_post" in result.stdout


def test_probe_linear_kind_and_builtin_set(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    result = run(
        "probe", "-m", str(tiny_folder), "--data", "builtin:plural", "--site",
        "blocks.0.hook_resid_post", "--kind", "linear", "--folds", "0", "--no-control",
        "--json", str(out), "-q",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["kind"] == "linear" and data["data"] == "builtin:plural"
    assert data["n_examples"] == 400 and data["classes"] == ["plural", "singular"]
    (site,) = data["sites"]
    assert site["cv_mean"] is None and site["control_accuracy"] is None


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"text": "Mary", "label": 1}', "{oops"], "line 2 is not valid JSON"),
        (['{"text": "Mary", "label": 1}', '{"text": "John", "label": 1}'], "two classes"),
        (['{"text": "Mary"}'], "lacks 'label'"),
        ([], "is empty"),
    ],
)
def test_probe_bad_data_is_a_one_line_error(
    tiny_folder: Path, tmp_path: Path, lines: list[str], message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines))
    result = run("probe", "-m", str(tiny_folder), "--data", str(path), "-q")
    assert result.exit_code == 2 and message in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_probe_unknown_builtin_and_site(tiny_folder: Path, name_file: Path) -> None:
    result = run("probe", "-m", str(tiny_folder), "--data", "builtin:colours", "-q")
    assert result.exit_code == 2 and "unknown built-in probing set 'colours'" in result.stderr
    result = run("probe", "-m", str(tiny_folder), "-d", str(name_file), "-s", "blocks.*.nope")
    assert result.exit_code == 2 and "matches no site" in result.stderr
