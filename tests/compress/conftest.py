"""Calibration tokens for the compression tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def calib() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(2, 101, (4, 24), generator=g) for _ in range(2)]
