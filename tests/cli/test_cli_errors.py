"""One error format (one line ``error: ...``, exit 2) and a command line that answers without
importing torch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import mechscope
from mechscope.cli.main import COMMANDS, cli

HEAVY = ("torch", "transformers", "numpy", "safetensors", "mechscope.models", "mechscope.patching")

# Runs the command line in a fresh interpreter and prints the heavy modules it imported.
PROBE = textwrap.dedent(
    """
    import sys
    from mechscope.cli.main import main
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    print("CODE", code, "IMPORTED", *[m for m in HEAVY if m in sys.modules], file=sys.stderr)
    """
).replace("HEAVY", repr(HEAVY))


def imported(*args: str) -> tuple[int, list[str], str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=120
    )
    last = proc.stderr.strip().splitlines()[-1].split()
    assert last[0] == "CODE", proc.stderr
    return int(last[1]), last[3:], proc.stderr


def test_help_and_version_import_no_torch() -> None:
    code, heavy, _ = imported("--help")
    assert code == 0 and heavy == []
    code, heavy, _ = imported("--version")
    assert code == 0 and heavy == []


@pytest.mark.parametrize("command", [*COMMANDS, "sae train", "sae eval", "lens train"])
def test_every_subcommand_help_imports_no_torch(command: str) -> None:
    code, heavy, err = imported(*command.split(), "--help")
    assert code == 0 and heavy == [], err


def test_argument_errors_import_no_torch() -> None:
    code, heavy, err = imported("patch", "--sweep", "attn_heads")
    assert code == 2 and heavy == [], err
    assert err.splitlines()[0].startswith("error: invalid value for '--sweep'")


def test_package_attributes_resolve_lazily() -> None:
    assert mechscope.__version__ and mechscope.DEFAULT_MODEL == "smollm2-135m"
    from mechscope.cache import Cache
    from mechscope.models.hooked import HookedModel

    assert mechscope.Cache is Cache and mechscope.HookedModel is HookedModel
    assert callable(mechscope.load) and "load" in dir(mechscope)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mechscope.nope  # noqa: B018


def one_line(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Usage:" not in result.output and "Error:" not in result.output
    return lines[0]


def test_bad_choice_names_the_valid_choices() -> None:
    line = one_line(["patch", "--sweep", "attn_heads"])
    assert "'attn_heads' is not one of 'resid_pre'" in line and "'attn_head'" in line
    assert line.endswith("(see 'mechscope patch --help')")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["patch"], "missing option '--sweep' / '-s'; choose from: resid_pre, resid_mid"),
        (["harvest", "--tokens", "5"], "missing option '--site' / '-s'"),
        (["probe", "--data", "x", "--kind", "svm"], "'svm' is not one of 'logistic', 'linear'"),
        (["toy", "superposition", "--features", "five"], "'five' is not a valid integer"),
        (["sae", "train", "--acts", "a", "--out", "b", "--batch-size", "0"], "x>=1"),
        (["bogus"], "no such command 'bogus'; commands: info, report, patch"),
        (["sae", "bogus"], "no such command 'bogus'; commands: eval, train"),
        (["--bogus"], "no such option '--bogus'"),
        (["info"], "give a MODEL"),
        (["harvest"], "missing option '--site'"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], expected: str) -> None:
    assert expected in one_line(args)


def test_probe_data_that_is_binary_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "image.jsonl"
    data.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    line = one_line(["probe", "--data", str(data), "-m", "no-model-needed"])
    assert "image.jsonl line 1 is not UTF-8 text" in line
