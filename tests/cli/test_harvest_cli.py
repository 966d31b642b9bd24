"""``mechscope harvest`` on a tiny saved model and a JSONL corpus: store, resume, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mechscope.activations import ActivationStore
from mechscope.cli.harvest import parse_tokens
from mechscope.cli.main import cli


def run(*args: str):
    return CliRunner().invoke(cli, ["harvest", *args])


def test_harvest_writes_a_store_and_resumes(tiny_folder: Path, corpus: Path, tmp_path) -> None:
    out = tmp_path / "acts"
    args = ["-m", str(tiny_folder), "-c", str(corpus), "--site", "blocks.1.hook_resid_mid",
            "--site", "blocks.1.hook_mlp_out", "--seq-len", "16", "--shard-tokens", "128",
            "--split", "all", "-o", str(out), "-q"]  # fmt: skip
    result = run(*args, "--tokens", "500")
    assert result.exit_code == 0, result.output
    # 15 stored positions per window of 16 (the first left out): 8 windows, 120 rows per shard
    assert "500 tokens x blocks.1.hook_resid_mid [" in result.output and "5 shards" in result.output
    store = ActivationStore.open(out, verify=True)
    assert store.sites == ["blocks.1.hook_resid_mid", "blocks.1.hook_mlp_out"]
    first = store.tensor("blocks.1.hook_mlp_out")
    result = run(*args, "--tokens", "1k")  # the same folder, more tokens: extended in place
    assert result.exit_code == 0, result.output
    assert "1,000 tokens" in result.output and "resumed at 480" in result.output
    grown = ActivationStore.open(out)
    assert torch.equal(grown.tensor("blocks.1.hook_mlp_out")[:500], first)
    assert not grown.manifest.include_first
    result = run(
        *args[:-3], "-o", str(tmp_path / "all"), "-q", "--tokens", "500", "--include-first"
    )
    assert result.exit_code == 0 and "4 shards" in result.output  # 8 windows of 16 per shard
    assert ActivationStore.open(tmp_path / "all").manifest.config["include_first"] is True


def test_other_settings_need_another_folder_or_overwrite(
    tiny_folder: Path, corpus: Path, tmp_path
) -> None:
    base = ["-m", str(tiny_folder), "-c", str(corpus), "-s", "blocks.0.hook_resid_post",
            "--seq-len", "16", "-n", "100", "-o", str(tmp_path), "-q"]  # fmt: skip
    assert run(*base).exit_code == 0
    result = run(*base, "--seed", "3")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {tmp_path} holds a harvest with other settings (seed differ); "
        "pick another output folder or pass --overwrite"
    ]
    assert run(*base, "--seed", "3", "--overwrite").exit_code == 0
    assert ActivationStore.open(tmp_path).manifest.config["seed"] == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["-s", "blocks.9.hook_resid_post", "-n", "100"],
            "unknown hook name 'blocks.9.hook_resid_post'",
        ),
        (["-s", "blocks.0.hook_resid_post", "-n", "lots"], "--tokens must be a positive count"),
        (
            ["-s", "blocks.0.hook_resid_post", "-n", "100", "--seq-len", "0"],
            "seq_len=0 is too short",
        ),
        (
            ["-s", "blocks.0.hook_resid_post", "-n", "100", "--batch-size", "0"],
            "batch_size must be",
        ),
    ],
)
def test_bad_input_is_one_line(tiny_folder: Path, corpus: Path, tmp_path, extra, message) -> None:
    base = ["-m", str(tiny_folder), "-c", str(corpus), "-o", str(tmp_path / "x"), "-q"]
    result = run(*base, "--seq-len", "16", *extra)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_parse_tokens() -> None:
    assert [parse_tokens(t) for t in ("20000", "500k", "10M", "1.5k")] == [
        20000,
        500_000,
        10**7,
        1500,
    ]
