"""Single-process pieces of the distributed wrappers (no process group needed)."""

from __future__ import annotations

import pytest
import torch

from mechscope.distributed import from_main, world_size
from mechscope.distributed.sae import shard_batches
from mechscope.errors import MechscopeError


def test_slices_of_a_batch_partition_it() -> None:
    batch = torch.arange(12.0).view(6, 2)
    parts = [next(shard_batches([batch], r, 3)) for r in range(3)]
    assert torch.equal(torch.cat(parts), batch)
    pairs = [next(shard_batches([(batch, -batch)], r, 2)) for r in range(2)]
    assert torch.equal(torch.cat([p[1] for p in pairs]), -batch)


def test_a_batch_that_does_not_split_is_a_one_line_error() -> None:
    with pytest.raises(MechscopeError, match="multiple of the process count"):
        next(shard_batches([torch.zeros(5, 2)], 0, 2))


def test_without_torchrun_it_is_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_size() == 1
    assert from_main(lambda: 7) == 7
