"""What every benchmark shares: the device it runs on, timing that waits for it, the machine.

``add_device_option(parser)`` adds ``--device cpu|cuda|auto`` (auto, the default: cuda when
available); ``pick_device(args.device)`` turns it into a ``torch.device`` (``cuda`` on a machine
without one is an error, not a silent CPU run). ``timed(fn, device)`` runs ``fn()`` between two
``torch.cuda.synchronize`` calls on a GPU, so the time counts the kernels, not their launch, and
returns ``(result, wall seconds, process CPU seconds)``. ``device_label(device)`` and
``machine(device)`` name the hardware for the output.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

DEVICES = ("auto", "cpu", "cuda")


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else ``platform.processor()``."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return cpu


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device cpu|cuda|auto`` (default auto: cuda when available)."""
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where mechscope and its peer both run (auto: cuda when available, else cpu)",
    )


def pick_device(name: str) -> torch.device:
    """The device for ``--device NAME``; ``cuda`` without a GPU exits with a one-line error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but torch sees no CUDA device; use --device cpu")
    if name not in DEVICES:
        raise SystemExit(f"error: unknown device {name!r}; use one of {', '.join(DEVICES)}")
    return torch.device(name)


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device | str) -> tuple[Any, float, float]:
    """``(fn(), wall seconds, process CPU seconds)``, synchronised with the device on both ends."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def device_label(device: torch.device | str) -> str:
    """``"cpu (<CPU model>)"`` or ``"cuda (<GPU name>)"``."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_name()})"


def machine(device: torch.device | str) -> dict[str, str]:
    """The hardware and versions a run used, for its output."""
    return {
        "device": device_label(device),
        "cpu": cpu_name(),
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
