"""A built database against independent recomputation: every stored activation, the top examples,
statistics, interval and negative samples, logit tables and neighbours; and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from features_helpers import SEQ_LEN, build_config

from mechscope.corpus import load_corpus, windows
from mechscope.errors import MechscopeError
from mechscope.features import open_db
from mechscope.sae import load_sae


def site_values(model, sae, source: str, tokens: torch.Tensor) -> torch.Tensor:
    """[batch pos unit] recomputed with run_with_cache and plain tensor ops (not the readouts)."""
    kind, _, rest = source.partition(":")
    hook = {"mlp": "blocks.1.mlp.hook_post", "attn": "blocks.0.attn.hook_z"}.get(kind, sae and sae.cfg.hook_name)  # fmt: skip
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=[hook])
        x = cache[hook].float()
        if kind == "mlp":
            return x
        if kind == "attn":
            return torch.sqrt((x * x).sum(-1))
        scale = sae.cfg.normalize_scale or 1.0
        return sae.encode(x) * (sae.W_dec.float() / scale).norm(dim=-1)


@pytest.fixture(scope="module")
def db(built):
    with open_db(str(built), readonly=True) as d:
        yield d


@pytest.fixture(scope="module")
def all_windows(tiny, fx):
    cfg = build_config(fx)
    rows = windows(load_corpus(str(fx["corpus"])), tiny.tokenizer, seq_len=SEQ_LEN, n_tokens=cfg.n_tokens, seed=cfg.seed)  # fmt: skip
    return torch.stack(list(rows))


@pytest.mark.parametrize("source", ["mlp:1", "attn:0", "sae:tiny-sae"])
def test_every_stored_example_matches_a_fresh_forward(db, tiny, fx, source: str) -> None:
    sae = load_sae(fx["sae"]) if source.startswith("sae") else None
    n = db.source(source)["n_features"]
    checked = 0
    for index in range(n):
        for kind in ("top", "quantile", "negative"):
            exs = db.examples(source, index, kind)
            if not exs:
                continue
            tokens = torch.tensor([e.token_ids for e in exs])
            fresh = site_values(tiny, sae, source, tokens)[..., index]
            stored = torch.tensor([e.values for e in exs])
            torch.testing.assert_close(stored, fresh, atol=1e-5, rtol=1e-4)
            for e, row in zip(exs, stored, strict=True):  # the value is the max after position 0
                assert e.value == pytest.approx(float(row[1:].max()), abs=1e-6)
                assert e.position == 1 + int(row[1:].argmax())
                assert e.tokens == db.tokens(e.token_ids)
            checked += len(exs)
    assert checked > n * 6


@pytest.mark.parametrize("source", ["mlp:1", "attn:0", "sae:tiny-sae"])
def test_top_examples_and_statistics_equal_brute_force(db, tiny, fx, all_windows, source) -> None:
    sae = load_sae(fx["sae"]) if source.startswith("sae") else None
    acts = site_values(tiny, sae, source, all_windows)  # [window pos unit]
    body = acts[:, 1:]  # the first position is left out by default
    best = body.max(1).values.T  # [unit window]
    for index in range(acts.shape[-1]):
        f = db.feature(source, index)
        order = torch.sort(best[index], descending=True, stable=True)
        assert [e["window"] for e in f["examples"]] == order.indices[:6].tolist()
        col = body[..., index].flatten().double()
        assert f["max"] == pytest.approx(float(col.max()), abs=1e-6)
        assert f["mean"] == pytest.approx(float(col.mean()), abs=1e-6)
        assert f["density"] == pytest.approx(float((col > 0).double().mean()), abs=1e-12)
        assert sum(f["histogram"]["counts"]) == len(col)
        for e in f["quantile_examples"]:  # each drawn from its interval of window maxima
            assert e["lo"] <= e["value"] < e["hi"] and e["value"] > 0
        if source.startswith("attn"):  # a norm: the 3 windows of smallest maximum (.heads)
            low = torch.sort(best[index], stable=True).indices[:3]
            assert [e["window"] for e in f["negative_examples"]] == low.tolist()
            assert [e["value"] for e in f["negative_examples"]] == pytest.approx(best[index][low].tolist(), abs=1e-6)  # fmt: skip
        for e in f["negative_examples"]:
            assert e["value"] <= 0 or source.startswith("attn")
        top_hi = max([e["hi"] for e in f["quantile_examples"]], default=None)
        if top_hi is not None:  # the grid covers the maximum with 4 cells of width 2**e
            width = f["quantile_examples"][0]["hi"] - f["quantile_examples"][0]["lo"]
            assert float(best[index].max()) < 4 * width
            assert width == 2.0**-16 or float(best[index].max()) >= 2 * width


def test_negatives_are_found_where_a_unit_is_often_silent(db) -> None:
    n = db.source("sae:tiny-sae")["n_features"]
    found = [len(db.examples("sae:tiny-sae", i, "negative")) for i in range(n)]
    assert max(found) == 3


def test_logit_table_and_neighbours(db, tiny) -> None:
    from mechscope.neurons import final_residuals, mlp_neurons, norm_jacobian

    writes = mlp_neurons(tiny, 1).writes
    w_u = tiny.unembed.weight.detach().float()
    cfg_windows = db.examples("mlp:1", 0, "top")  # any real residuals linearise the norm
    resid = final_residuals(tiny, torch.tensor([e.token_ids for e in cfg_windows]))
    jac = norm_jacobian(tiny, resid)
    unit = torch.nn.functional.normalize(writes, dim=-1)
    for index in (0, 7, 33):
        f = db.feature("mlp:1", index)
        promotes = [p["id"] for p in f["logits"]["promotes"]]
        effect = w_u @ jac @ writes[index]
        assert len(set(promotes[:3]) & set(effect.topk(5).indices.tolist())) >= 2
        cos = unit @ unit[index]
        cos[index] = -2
        assert [n["index"] for n in f["neighbours"]] == cos.topk(10).indices.tolist()


def test_head_write_direction_logit_table_and_neighbours(db, tiny, all_windows) -> None:
    """attn:0: w_h = (sum of z_h at the top examples' peaks) @ W_O[h] / sum of their norms, from a
    fresh run_with_cache and the o_proj weight; its logit table W_U J w_h with J the final norm's
    Jacobian over the first 8 windows (as the build linearises) and cosine neighbours."""
    from mechscope.neurons import final_residuals, norm_jacobian

    d = tiny.dims
    w_o = tiny.block(0).self_attn.o_proj.weight.detach().float()  # [d_model head*d_head]
    jac = norm_jacobian(tiny, final_residuals(tiny, all_windows[:8]))
    w_u = tiny.unembed.weight.detach().float()
    writes = []
    for h in range(d.n_heads):
        exs = db.examples("attn:0", h, "top")
        with torch.no_grad():
            _, cache = tiny.run_with_cache(torch.tensor([e.token_ids for e in exs]), names=["blocks.0.attn.hook_z"])  # fmt: skip
        z = cache["blocks.0.attn.hook_z"][torch.arange(len(exs)), [e.position for e in exs], h]
        mean = z.double().sum(0) / z.double().norm(dim=-1).sum()
        writes.append((mean @ w_o[:, h * d.d_head : (h + 1) * d.d_head].double().T).float())
        f = db.feature("attn:0", h)
        effect = w_u @ jac @ writes[-1]
        up, down = effect.topk(10), effect.topk(10, largest=False)
        assert [p["id"] for p in f["logits"]["promotes"]][:3] == up.indices[:3].tolist()
        assert [p["value"] for p in f["logits"]["promotes"]] == pytest.approx(up.values.tolist(), rel=1e-3, abs=1e-5)  # fmt: skip
        assert [p["value"] for p in f["logits"]["suppresses"]] == pytest.approx(down.values.tolist(), rel=1e-3, abs=1e-5)  # fmt: skip
    unit = torch.nn.functional.normalize(torch.stack(writes), dim=-1)
    for h in range(d.n_heads):
        cos = unit @ unit[h]
        cos[h] = -2
        near = db.feature("attn:0", h)["neighbours"]
        assert [n["index"] for n in near] == cos.topk(d.n_heads - 1).indices.tolist()
        assert [n["cosine"] for n in near] == pytest.approx(cos.topk(d.n_heads - 1).values.tolist(), abs=1e-5)  # fmt: skip


def test_peak_tokens_count_the_top_examples(db) -> None:
    rows = db.backend.query("SELECT token_id, hits FROM peak_tokens WHERE source = ? AND idx = ?", ["mlp:1", 5])  # fmt: skip
    peaks = [e.token_ids[e.position] for e in db.examples("mlp:1", 5, "top")]
    assert dict(rows) == {t: peaks.count(t) for t in set(peaks)}


def test_errors_are_one_line(tiny, fx, tmp_path) -> None:
    from mechscope.features.build import build_features
    from mechscope.sae import SAE, SAEConfig, save_sae

    wide = SAEConfig(arch="relu", d_in=12, d_sae=8, hook_name="blocks.1.hook_resid_post")
    save_sae(SAE(wide, seed=0), tmp_path / "wide")
    cases = {
        f"sae:{tmp_path / 'wide'}": "takes d_in=12",
        f"sae:{tmp_path / 'missing'}": "no SAE at",
        "mlp:7": "layer 7 is out of range",
        "heads:1": "bad source",
    }
    for spec, words in cases.items():
        cfg = build_config(fx).__class__(model="t", sources=(spec,), corpus=str(fx["corpus"]))
        with pytest.raises(MechscopeError, match=words) as info:
            build_features(tiny, cfg, str(tmp_path / "x.db"))
        assert "\n" not in str(info.value)
    (tmp_path / "other.db").write_bytes(b"not sqlite at all" * 10)
    with pytest.raises(MechscopeError, match="not a mechscope feature database"):
        build_features(tiny, build_config(fx), str(tmp_path / "other.db"))
    import sqlite3

    sqlite3.connect(tmp_path / "foreign.db").execute("CREATE TABLE t (x)")
    with pytest.raises(MechscopeError, match="not a mechscope feature database"):
        open_db(str(tmp_path / "foreign.db"))
    with pytest.raises(MechscopeError, match="other tables"):
        build_features(tiny, build_config(fx), str(tmp_path / "foreign.db"))


def test_blob_layout_is_little_endian(db) -> None:
    row = db.backend.query("SELECT token_ids, acts FROM examples LIMIT 1")[0]
    assert len(row[0]) == 4 * SEQ_LEN and len(row[1]) == 4 * SEQ_LEN
    assert np.frombuffer(row[0], "<i4").max() < 100
