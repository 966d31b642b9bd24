"""harvest(): stored rows equal run_with_cache on the same windows; early stop; norm scales; errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mechscope.activations import ActivationStore, harvest
from mechscope.corpus import Corpus, windows
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel

SITE = "blocks.1.hook_resid_post"


def cached(model: HookedModel, corpus: Corpus, sites: list[str], n_windows: int, **kw) -> dict:
    """The oracle: run_with_cache on the first windows of the same stream, rows flattened."""
    ws = list(windows(corpus, model.tokenizer, **kw))[:n_windows]
    _, cache = model.run_with_cache(torch.stack(ws), names=sites)
    return {s: cache[s].reshape(-1, cache[s].shape[-1]) for s in sites}


@pytest.mark.parametrize("include_first", [False, True])
def test_rows_equal_run_with_cache(
    tiny: HookedModel, toy_corpus: Corpus, tmp_path, include_first: bool
) -> None:
    """Rows are positions 1: of every window by default (the first position is the attention
    sink), every position with include_first; the manifest records the choice."""
    store = harvest(
        tiny, SITE, toy_corpus, 3000, tmp_path, seq_len=32, shard_tokens=1000, progress=False,
        include_first=include_first,
    )  # fmt: skip
    m = store.manifest
    assert m.complete and m.n_tokens == 3000 and m.d_in == 48 and m.d_out is None
    assert m.config["include_first"] is include_first and m.include_first is include_first
    # 1000 // 31 = 32 windows of 31 rows, or 1000 // 32 = 31 windows of 32: 992 rows per shard
    assert [s.n_tokens for s in m.shards] == [992, 992, 992, 24]
    x = store.tensor()
    per_window = 32 if include_first else 31
    n_windows = math.ceil(3000 / per_window)
    want = cached(tiny, toy_corpus, [SITE], n_windows, seq_len=32, split="train")[SITE]
    rows = want.reshape(n_windows, 32, 48)[:, 32 - per_window :].reshape(-1, 48)
    assert torch.equal(x, rows[:3000])
    store.verify()


def test_transcoder_pair_and_bos_skip(tiny: HookedModel, toy_corpus: Corpus, tmp_path) -> None:
    sites = ["blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post"]
    tok = tiny.tokenizer
    tok.bos_token = "v0"  # give the word-level tokenizer a BOS so prepend_bos can be tested
    try:
        store = harvest(
            tiny, sites, toy_corpus, 620, tmp_path, seq_len=32, prepend_bos=True, progress=False,
            shard_tokens=300,
        )  # fmt: skip
        want = cached(tiny, toy_corpus, sites, 20, seq_len=32, split="train", prepend_bos=True)
    finally:
        tok.bos_token = None
    m = store.manifest
    assert m.d_in == 48 and m.d_out == 48 and m.n_tokens == 620  # 31 rows per window
    for site in sites:  # position 0 (BOS) of every window is left out
        rows = want[site].reshape(20, 32, 48)[:, 1:].reshape(-1, 48)
        assert torch.equal(store.tensor(site), rows)
    assert not m.include_first
    # shuffled batches keep the sites paired: resid_post = resid_mid + mlp_out on every row
    for mid, out, post in store.batches(64, seed=3, mix_shards=2):
        torch.testing.assert_close(mid + out, post, rtol=0, atol=1e-6)


def test_forward_stops_after_the_deepest_site(
    tiny: HookedModel, toy_corpus: Corpus, tmp_path
) -> None:
    calls = []
    layers = tiny.hf.model.layers
    handles = [
        layer.register_forward_pre_hook(lambda mod, args, i=i: calls.append(i))
        for i, layer in enumerate(layers)
    ]
    try:
        harvest(
            tiny, "blocks.0.hook_mlp_out", toy_corpus, 256, tmp_path, seq_len=32, progress=False
        )
    finally:
        for h in handles:
            h.remove()
    assert calls and set(calls) == {0}  # layers 1 and 2 never ran (1 batch of 8 windows)


def test_norm_scale_gives_unit_mean_squared_norm(
    tiny: HookedModel, toy_corpus: Corpus, tmp_path
) -> None:
    store = harvest(
        tiny, SITE, toy_corpus, 2000, tmp_path, seq_len=32, shard_tokens=512, progress=False
    )
    x = store.tensor().double()
    assert store.norm_scale == pytest.approx(1 / x.pow(2).sum(1).mean().sqrt().item(), rel=1e-9)
    normed = torch.cat(list(store.batches(300, normalize=True)))
    assert normed.double().pow(2).sum(1).mean().item() == pytest.approx(1.0, rel=1e-5)
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk["norm_scale"] == store.norm_scale and on_disk["d_in"] == 48


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_store_is_the_rounded_float32_store(
    tiny: HookedModel, toy_corpus: Corpus, tmp_path, dtype: str
) -> None:
    full = harvest(tiny, SITE, toy_corpus, 700, tmp_path / "f", seq_len=32, progress=False)
    low = harvest(
        tiny, SITE, toy_corpus, 700, tmp_path / "l", seq_len=32, dtype=dtype, progress=False
    )
    assert low.manifest.dtype == dtype
    assert torch.equal(low.tensor(), full.tensor().to(getattr(torch, dtype)))


def test_corpus_running_out_ends_the_store_early(tiny: HookedModel, tmp_path) -> None:
    small = Corpus.from_texts([" ".join(["v1"] * 70), " ".join(["v2"] * 40), "v3 v4"], name="s")
    store = harvest(tiny, SITE, small, 10_000, tmp_path, seq_len=32, progress=False)
    assert store.manifest.exhausted and store.manifest.complete
    assert store.n_tokens == 3 * 31  # 2 windows from the first document, 1 from the second


def test_repeat_run_reuses_a_complete_store(
    tiny: HookedModel, toy_corpus: Corpus, tmp_path
) -> None:
    first = harvest(tiny, SITE, toy_corpus, 500, tmp_path, seq_len=32, progress=False)
    stamp = (tmp_path / first.manifest.shards[0].file).stat().st_mtime_ns
    again = harvest(tiny, SITE, toy_corpus, 500, tmp_path, seq_len=32, progress=False)
    assert again.manifest == first.manifest
    assert (tmp_path / first.manifest.shards[0].file).stat().st_mtime_ns == stamp


def test_a_store_can_be_extended_or_cut(tiny: HookedModel, toy_corpus: Corpus, tmp_path) -> None:
    kw = {"seq_len": 32, "shard_tokens": 320, "progress": False}  # 10 windows per shard
    fresh = {n: harvest(tiny, SITE, toy_corpus, n, tmp_path / str(n), **kw) for n in (700, 1500)}
    grown = harvest(tiny, SITE, toy_corpus, 700, tmp_path / "g", **kw)
    first = [(tmp_path / "g" / s.file).stat().st_mtime_ns for s in grown.manifest.shards[:2]]
    grown = harvest(tiny, SITE, toy_corpus, 1500, tmp_path / "g", **kw)
    assert grown.manifest.shards == fresh[1500].manifest.shards  # shard 2 (60 rows) was redone
    assert grown.manifest.norm_scales == fresh[1500].manifest.norm_scales
    assert [
        (tmp_path / "g" / s.file).stat().st_mtime_ns for s in grown.manifest.shards[:2]
    ] == first
    cut = harvest(tiny, SITE, toy_corpus, 700, tmp_path / "g", **kw)
    assert cut.manifest.shards == fresh[700].manifest.shards
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == sorted(
        ["manifest.json", *(s.file for s in cut.manifest.shards)]
    )


def test_other_settings_in_the_folder_is_an_error(
    tiny: HookedModel, toy_corpus: Corpus, tmp_path
) -> None:
    harvest(tiny, SITE, toy_corpus, 500, tmp_path, seq_len=32, progress=False)
    with pytest.raises(MechscopeError, match=r"other settings \(seed differ\).*--overwrite"):
        harvest(tiny, SITE, toy_corpus, 600, tmp_path, seq_len=32, seed=1, progress=False)
    store = harvest(
        tiny, SITE, toy_corpus, 600, tmp_path, seq_len=32, seed=1, overwrite=True, progress=False
    )
    assert store.n_tokens == 600 and store.manifest.config["seed"] == 1
    assert len(list(tmp_path.glob("shard-*"))) == len(store.manifest.shards)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"sites": "blocks.1.hook_resid_pots"},
            "unknown hook name.*nearest: blocks.1.hook_resid_post",
        ),
        ({"sites": "blocks.0.attn.hook_pattern"}, "not one vector per token"),
        ({"sites": []}, "one or more distinct site names"),
        ({"dtype": "int8"}, "unknown dtype 'int8'"),
        ({"n_tokens": 0}, "n_tokens must be a positive integer"),
        ({"seq_len": 100}, "exceeds the model's context of 64"),
        ({"prepend_bos": True}, "no BOS token"),
    ],
)
def test_bad_input(tiny: HookedModel, toy_corpus: Corpus, tmp_path, kwargs, message) -> None:
    args = {"sites": SITE, "n_tokens": 100, "seq_len": 32, **kwargs}
    with pytest.raises(MechscopeError, match=message):
        harvest(
            tiny,
            args.pop("sites"),
            toy_corpus,
            args.pop("n_tokens"),
            tmp_path,
            progress=False,
            **args,
        )
    assert not (tmp_path / "manifest.json").exists()  # refused before touching the folder


def test_non_empty_folder_without_a_store_is_refused(
    tiny: HookedModel, toy_corpus: Corpus, tmp_path
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(MechscopeError, match="not empty and holds no activation store"):
        harvest(tiny, SITE, toy_corpus, 100, tmp_path, seq_len=32, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_missing_truncated_and_corrupt_shards(
    tiny: HookedModel, toy_corpus: Corpus, tmp_path
) -> None:
    store = harvest(
        tiny, SITE, toy_corpus, 1500, tmp_path, seq_len=32, shard_tokens=500, progress=False
    )
    reference = store.tensor()
    shard = tmp_path / store.manifest.shards[1].file
    data = shard.read_bytes()
    shard.write_bytes(data[:-10])
    with pytest.raises(MechscopeError, match="shard-00001.safetensors .* is truncated"):
        ActivationStore.open(tmp_path)
    shard.unlink()
    with pytest.raises(MechscopeError, match="shard-00001.safetensors is missing"):
        ActivationStore.open(tmp_path)
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF
    shard.write_bytes(bytes(flipped))
    ActivationStore.open(tmp_path)  # same size: only hashing notices
    with pytest.raises(MechscopeError, match="does not match its sha256"):
        ActivationStore.open(tmp_path, verify=True)
    shard.unlink()  # running the harvest again rebuilds the missing shard, identically
    rebuilt = harvest(
        tiny, SITE, toy_corpus, 1500, tmp_path, seq_len=32, shard_tokens=500, progress=False
    )
    assert torch.equal(rebuilt.tensor(), reference)
    assert rebuilt.manifest.shards == store.manifest.shards


def test_partial_store_needs_allow_partial(tiny: HookedModel, toy_corpus: Corpus, tmp_path) -> None:
    harvest(tiny, SITE, toy_corpus, 1500, tmp_path, seq_len=32, shard_tokens=500, progress=False)
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["complete"], data["shards"] = False, data["shards"][:1]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(MechscopeError, match="not complete .*run the same `mechscope harvest`"):
        ActivationStore.open(tmp_path)
    assert ActivationStore.open(tmp_path, allow_partial=True).n_tokens == 496  # 16 windows of 31
    with pytest.raises(MechscopeError, match="not an activation store"):
        ActivationStore.open(tmp_path / "nowhere")
