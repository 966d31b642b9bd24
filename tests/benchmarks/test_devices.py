"""Every benchmark takes --device; the shared helpers pick it, synchronise and name it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import machine  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_pick_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert machine.pick_device("auto").type == expected
    assert machine.pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="error: --device cuda, but torch sees no CUDA"):
            machine.pick_device("cuda")
    assert machine.device_label("cpu").startswith("cpu (")


def test_timed_returns_the_result_and_both_clocks() -> None:
    out, wall, cpu = machine.timed(lambda: sum(range(100_000)), torch.device("cpu"))
    assert out == sum(range(100_000)) and wall > 0 and cpu >= 0


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("bench_*.py")))
def test_every_benchmark_has_the_device_option(script: str) -> None:
    text = (BENCH / script).read_text()
    assert "add_device_option(" in text and "pick_device(" in text, script
    recorded = ("device_label(", '"device"', "machine(")  # machine() records the device too
    assert any(s in text for s in recorded), f"{script} does not record its device"


def run_sae_step(device: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    args = ["--device", device, "--steps", "1", "--d-in", "16", "--expansion", "2", "--k", "2",
            "--batch", "32"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_sae_step.py"), *args],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_sae_step_benchmark_on_cpu() -> None:
    out = run_sae_step("cpu")
    assert "device cpu (" in out and re.search(r"speed-up of the sparse path: [\d.]+x", out)


@cuda
def test_sae_step_benchmark_on_cuda() -> None:
    assert "device cuda (" in run_sae_step("cuda")
