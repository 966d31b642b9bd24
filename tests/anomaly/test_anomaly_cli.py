"""``mechscope anomaly fit / score / eval`` and ``toy backdoor`` through the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mechscope.anomaly.checkpoint import checkpoint_path
from mechscope.cli.main import cli


@pytest.fixture(scope="module")
def files(world: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("anomaly-cli")
    out = {}
    for name, texts in (
        ("trusted", world.trusted),
        ("clean", world.held),
        ("trig", world.triggered),
    ):
        out[name] = root / f"{name}.jsonl"
        out[name].write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out["root"] = root
    return out


def _run(*args: str) -> Any:
    return CliRunner().invoke(cli, [*args, "--quiet"])


def test_fit_score_eval(model_folder: Path, files: dict[str, Path]) -> None:
    det = files["root"] / "det"
    fit = _run(
        "anomaly",
        "fit",
        "--model",
        str(model_folder),
        "--trusted",
        str(files["trusted"]),
        "--out",
        str(det),
        "--kinds",
        "mahalanobis,perplexity",
        "--seq-len",
        "32",
        "--n-tokens",
        "3200",
    )
    assert fit.exit_code == 0, fit.stderr
    assert (det / "detector.safetensors").is_file() and (det / "detector.json").is_file()
    assert not checkpoint_path(det).exists()  # the fit's checkpoint goes once the detector is saved
    out = files["root"] / "scores.json"
    html = files["root"] / "scores.html"
    score = _run(
        "anomaly",
        "score",
        str(det),
        "--corpus",
        str(files["trig"]),
        "--json",
        str(out),
        "--html",
        str(html),
    )
    assert score.exit_code == 0, score.stderr
    assert "old" in html.read_text() and "http" not in html.read_text()
    payload = json.loads(out.read_text())
    assert len(payload["inputs"]) == len(files["trig"].read_text().splitlines())
    assert sum(i["flagged"] for i in payload["inputs"]) >= 0.9 * len(payload["inputs"])
    ev = _run(
        "anomaly",
        "eval",
        str(det),
        "--clean",
        str(files["clean"]),
        "--set",
        f"trigger={files['trig']}",
    )
    assert ev.exit_code == 0, ev.stderr
    assert "trigger" in ev.stdout and "perplexity" in ev.stdout


def test_cli_errors_are_one_line(model_folder: Path, files: dict[str, Path]) -> None:
    empty = files["root"] / "empty.jsonl"
    empty.write_text("")
    result = _run(
        "anomaly",
        "fit",
        "--model",
        str(model_folder),
        "--trusted",
        str(empty),
        "--out",
        str(files["root"] / "det-empty"),
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    binary = files["root"] / "binary.txt"
    binary.write_bytes(b"\x00\x01\x02")
    result = _run("anomaly", "score", str(files["root"]), "--corpus", str(binary))
    assert result.exit_code == 2 and "not a text file" in result.stderr
    result = _run("toy", "backdoor", "--steps", "0")
    assert result.exit_code == 2 and "--steps" in result.stderr
    result = _run("toy", "backdoor", "--triggers", " | ")
    assert result.exit_code == 2 and "--triggers is empty" in result.stderr
    result = _run("toy", "backdoor", "--first-trained", "1")
    assert result.exit_code == 2 and "--first-trained must be in [0, 1)" in result.stderr
    trusted = files["root"] / "trusted-prompts.jsonl"
    trusted.write_text('{"text": "the red fox sees the old dog ."}\n' * 20)
    fit = ("anomaly", "fit", "--model", str(model_folder), "--trusted", str(trusted))
    result = _run(*fit, "--out", str(files["root"] / "det-p"), "--fit-on", "prompts")
    assert result.exit_code == 2 and "use aggregate 'last'" in result.stderr
