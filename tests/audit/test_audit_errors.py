"""Bad input to ``mechscope audit``: one line, exit code 2, before any analysis runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import tiny_llama
from mechscope.audit import AuditConfig, build_audit
from mechscope.cli.main import cli
from mechscope.errors import MechscopeError

pytestmark = pytest.mark.xdist_group("audit")  # one worker builds the shared audit once


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with other weights than the one the detector was fitted on, on disk."""
    folder = tmp_path_factory.mktemp("other-model")
    model = tiny_llama(seed=1)
    model.hf.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return folder


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["audit", *args])
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "ioi,nosuchtask"], "unknown task 'nosuchtask'"),
        (["--features", "missing.db"], "feature database missing.db not found"),
        (["--detector", "nodet"], "detector nodet not found"),
        (["--screen", "x.jsonl"], "is not NAME=PATH"),
        (["--findings", "circuits,magic"], "unknown findings ['magic']"),
        (["--compress", "--compress-bits", "1"], "bits must lie in [2.5, 16]"),
    ],
)
def test_bad_options(args: list[str], message: str, other_model_dir: Path, tmp_path: Path) -> None:
    # a tiny model and one cheap finding: should a check be missing, the audit runs quickly
    cheap = ["--model", str(other_model_dir), "--findings", "probes", "--no-pdf", "--quiet"]
    code, err = run(*cheap, *args, "--out", str(tmp_path / "a"))
    assert code == 2 and err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_not_a_feature_database(tmp_path: Path) -> None:
    bad = tmp_path / "notes.db"
    bad.write_text("hello")
    code, err = run("--features", str(bad), "--out", str(tmp_path / "a"))
    assert code == 2 and err.count("\n") == 1 and "not a" in err


def test_detector_of_another_model(other_model_dir: Path, inputs: dict, tmp_path: Path) -> None:
    out = tmp_path / "a"
    code, err = run("--model", str(other_model_dir), "--detector", inputs["detector"],
                    "--no-pdf", "--quiet", "--out", str(out))  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert "fitted on another model" in err and "mechscope anomaly fit" in err
    assert not (out / "audit.html").exists() and not (out / "findings").exists()


def test_api_errors(tiny, tmp_path: Path) -> None:
    with pytest.raises(MechscopeError, match="needs --detector"):
        AuditConfig(screen=(("a", str(tmp_path)),))
    (tmp_path / "file").write_text("x")
    with pytest.raises(MechscopeError, match="is a file"):
        build_audit(tiny, tmp_path / "file", AuditConfig(findings=()), pdf=False, quiet=True)
