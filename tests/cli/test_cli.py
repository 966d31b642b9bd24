"""The ``mechscope`` command on tiny saved folders: info, report, help, and one-line errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import mechscope
from mechscope.cli.main import cli, main

EXTERNAL = re.compile(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", re.IGNORECASE)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def assert_user_error(result: Result, match: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert match in lines[0]
    assert "Traceback" not in result.output + result.stderr


@pytest.mark.parametrize("args", [[], ["info"], ["report"]])
def test_help(args: list[str]) -> None:
    result = run(*args, "--help")
    assert result.exit_code == 0 and "Usage:" in result.stdout


def test_info_json_lists_every_site(tiny_folder: Path) -> None:
    result = run("info", str(tiny_folder), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    model = mechscope.load(str(tiny_folder), progress=False)
    assert data["model"] == str(tiny_folder) and data["family"] == "llama"
    assert data["dims"]["n_layers"] == model.dims.n_layers
    assert data["hook_points"] == {n: s.shape(model.dims) for n, s in model.sites.items()}
    assert data["hook_points"]["blocks.0.attn.hook_k"] == ["batch", "pos", 2, 8]


def test_info_table(tiny_folder: Path) -> None:
    result = run("info", str(tiny_folder))
    assert result.exit_code == 0, result.stderr
    assert "blocks.2.mlp.hook_post" in result.stdout and "[batch pos 80]" in result.stdout


@pytest.mark.slow  # every section, on the whole built-in corpus
def test_report(tiny_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    result = run("report", "--model", str(tiny_folder), "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path == out / "report.html"
    html = path.read_text("utf-8")
    assert not EXTERNAL.search(html) and "http://" not in html and "https://" not in html
    for title in ("Model", "Next-token predictions", "Logit lens"):
        assert f"<h2>{title}</h2>" in html


def test_unknown_model_type(tiny_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "weird"
    shutil.copytree(tiny_folder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "no_such_arch"}))
    assert_user_error(run("info", str(folder)), "no_such_arch")


def test_unsupported_architecture(bert_folder: Path) -> None:
    assert_user_error(run("info", str(bert_folder)), "unsupported architecture")


def test_missing_model(tmp_path: Path) -> None:
    assert_user_error(run("info", str(tmp_path / "nope")), "not found")
    assert_user_error(run("report", "-m", str(tmp_path / "nope.gguf")), "not found")


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt(tiny_folder: Path, tmp_path: Path, prompt: str) -> None:
    result = run("report", "-m", str(tiny_folder), "-o", str(tmp_path), "-p", prompt)
    assert_user_error(result, "empty prompt")


def test_entry_point_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["info", str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_usage_error_exits_2() -> None:
    assert run("info").exit_code == 2
    assert run("report", "--no-such-option").exit_code == 2


@pytest.mark.slow
def test_report_on_the_builtin_model(builtin_report: Path) -> None:
    """The session's one ``mechscope report`` run (tests/conftest.py)."""
    data = json.loads((builtin_report.parent / "report.json").read_text("utf-8"))
    ioi = data["predictions"][0]
    assert ioi["prompt"].startswith("When Mary and John")
    assert ioi["top"][0]["token"] == " Mary"
    assert data["logit_lens"]["target_rank"][-1][-1] == 0  # the last layer agrees
    assert "␣Mary" in builtin_report.read_text("utf-8")
