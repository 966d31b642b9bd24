"""store.batches(): every row once per pass, mixed across shards, deterministic for a seed."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from mechscope.activations import ActivationStore, harvest
from mechscope.corpus import Corpus
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel


@pytest.fixture(scope="module")
def store(tiny: HookedModel, toy_corpus: Corpus, tmp_path_factory) -> ActivationStore:
    out = tmp_path_factory.mktemp("reader")
    # 8 shards: 7 of 320 rows and one of 260 (every position stored: windows of 32 rows)
    return harvest(
        tiny, "blocks.2.hook_resid_post", toy_corpus, 2500, out, seq_len=32, shard_tokens=320,
        include_first=True, progress=False,
    )  # fmt: skip


def rows(t: torch.Tensor) -> list[tuple[float, ...]]:
    return sorted(map(tuple, t.tolist()))


def shard_of(store: ActivationStore) -> dict[tuple[float, ...], int]:
    return {tuple(r): i for i in range(8) for r in store.load_shard(i)[store.sites[0]].tolist()}


def test_one_pass_yields_every_row_once(store: ActivationStore) -> None:
    out = list(store.batches(96, seed=0, mix_shards=3))
    assert [b.shape[0] for b in out[:-1]] == [96] * (len(out) - 1) and out[-1].shape[0] == 2500 % 96
    assert rows(torch.cat(out)) == rows(store.tensor())
    dropped = list(store.batches(96, seed=0, mix_shards=3, drop_last=True))
    assert len(dropped) == 2500 // 96 and all(b.shape[0] == 96 for b in dropped)


def test_batches_mix_rows_of_several_shards(store: ActivationStore) -> None:
    where = shard_of(store)
    first = next(store.batches(64, seed=0, mix_shards=4))
    assert len({where[tuple(r)] for r in first.tolist()}) >= 3
    in_order = next(store.batches(64, shuffle=False))
    assert torch.equal(in_order, store.tensor()[:64])


def test_same_seed_same_batches(store: ActivationStore) -> None:
    a = torch.cat(list(store.batches(100, seed=5)))
    b = torch.cat(list(store.batches(100, seed=5)))
    c = torch.cat(list(store.batches(100, seed=6)))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_loop_runs_past_one_pass_with_full_batches(store: ActivationStore) -> None:
    stream = store.batches(250, seed=0, loop=True, mix_shards=3)
    got = [next(stream) for _ in range(25)]  # 2500 rows per pass: two and a half passes
    assert all(b.shape == (250, 48) for b in got)

    def count(batches: list[torch.Tensor]) -> Counter:
        return Counter(map(tuple, torch.cat(batches).tolist()))

    # each pass is a permutation (equal rows occur: position 0 sees only its token)
    once = Counter(map(tuple, store.tensor().tolist()))
    assert count(got[:10]) == once and count(got[10:20]) == once
    assert got[0].tolist() != got[10].tolist()  # a new order in the second pass


def test_normalize_and_dtype(store: ActivationStore) -> None:
    raw = next(store.batches(50, seed=1))
    normed = next(store.batches(50, seed=1, normalize=True, dtype=torch.float64))
    assert normed.dtype == torch.float64
    torch.testing.assert_close(normed, raw.double() * store.norm_scale)


def test_bad_arguments(store: ActivationStore) -> None:
    with pytest.raises(MechscopeError, match="batch_size and mix_shards must be positive"):
        store.batches(0)
    with pytest.raises(MechscopeError, match="no site 'nope'"):
        store.tensor("nope")
