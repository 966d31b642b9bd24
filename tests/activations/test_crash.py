"""A harvest killed with SIGKILL resumes into a store identical to an uninterrupted one.

The harvests run in subprocesses (one thread each, so every run computes the same bytes). Two
kinds of kill: at random moments once the manifest lists a few shards (the honest test), and at
the narrowest window, after a shard file is renamed into place but before the manifest lists it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import importlib, os, signal, sys
    import torch
    torch.set_num_threads(1)
    import mechscope
    from mechscope.corpus import load_corpus

    h = importlib.import_module("mechscope.activations.harvest")  # the module, not the function

    model_dir, corpus, out, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if kill_at:  # die after shard `kill_at` is renamed into place, before the manifest lists it
        real, calls = h.save_manifest, []
        def save_manifest(folder, manifest):
            calls.append(1)
            if len(calls) == kill_at + 2:  # call 1 is the initial manifest
                os.kill(os.getpid(), signal.SIGKILL)
            real(folder, manifest)
        h.save_manifest = save_manifest
    model = mechscope.load(model_dir, progress=False)
    h.harvest(
        model, ["blocks.1.hook_resid_mid", "blocks.1.hook_mlp_out"], load_corpus(corpus),
        N_TOKENS, out, seq_len=32, batch_size=4, shard_tokens=320, progress=False)
    """
)
N_TOKENS = 20_000  # 65 shards of 310 rows (10 windows of 31 stored positions)


def start(script: Path, files: tuple[Path, Path], out: Path, kill_at: int = 0) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CI": "1"}
    args = [sys.executable, str(script), str(files[0]), str(files[1]), str(out), str(kill_at)]
    return subprocess.Popen(args, env=env, stderr=subprocess.PIPE)


def run(script: Path, files: tuple[Path, Path], out: Path, kill_at: int = 0) -> int:
    proc = start(script, files, out, kill_at)
    _, err = proc.communicate(timeout=300)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(err.decode())
    return proc.returncode


def listed(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["shards"])
    except (OSError, ValueError):
        return 0


def snapshot(out: Path) -> tuple[list, dict[str, bytes]]:
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"]
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert sorted(files) == sorted(["manifest.json", *(s["file"] for s in manifest["shards"])])
    return [manifest["shards"], manifest["norm_scales"], manifest["n_tokens"]], files


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "run_harvest.py"
    path.write_text(SCRIPT.replace("N_TOKENS", str(N_TOKENS)))
    return path


@pytest.fixture(scope="module")
def reference(script: Path, toy_files: tuple[Path, Path], tmp_path_factory) -> tuple:
    out = tmp_path_factory.mktemp("uninterrupted")
    assert run(script, toy_files, out) == 0
    return snapshot(out)


@pytest.mark.slow  # several subprocess harvests of 20k tokens
def test_sigkill_at_random_moments_then_resume(
    script: Path, toy_files: tuple[Path, Path], reference: tuple, tmp_path: Path
) -> None:
    rng = random.Random(1234)
    kills = 0
    for threshold in (3, 30):  # kill twice, at random moments past these shard counts
        proc = start(script, toy_files, tmp_path)
        while listed(tmp_path) < threshold and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))  # about 0-3 shards further: mid-forward, mid-write, ...
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
        assert listed(tmp_path) >= threshold
    assert kills >= 1
    assert run(script, toy_files, tmp_path) == 0
    meta, files = snapshot(tmp_path)
    assert meta == reference[0]
    assert {k: v for k, v in files.items() if k != "manifest.json"} == {
        k: v for k, v in reference[1].items() if k != "manifest.json"
    }


def test_sigkill_between_shard_rename_and_manifest(
    script: Path, toy_files: tuple[Path, Path], reference: tuple, tmp_path: Path
) -> None:
    assert run(script, toy_files, tmp_path, kill_at=5) == -signal.SIGKILL
    # shards 0-5 are on disk, but the manifest lists only 0-4: shard 5 is an orphan
    assert listed(tmp_path) == 5 and (tmp_path / "shard-00005.safetensors").exists()
    (tmp_path / ".shard-00006.safetensors.tmp-1").write_bytes(b"half a shard")  # a stray temp
    assert run(script, toy_files, tmp_path) == 0
    meta, files = snapshot(tmp_path)
    assert meta == reference[0]
    assert files.keys() == reference[1].keys()
    assert all(files[k] == reference[1][k] for k in files if k != "manifest.json")
