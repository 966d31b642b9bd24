"""A crosscoder's latents in a feature database: built, browsed and searched by inference."""

from __future__ import annotations

import pytest
import torch

from mechscope.diff.crosscoder import CrosscoderInfo
from mechscope.diff.crosscoder_train import train_crosscoder
from mechscope.errors import MechscopeError
from mechscope.features import open_db
from mechscope.features.build import BuildConfig, build_features
from mechscope.features.search import search_infer
from mechscope.sae import load_sae

LAYER, SEQ = 1, 16


@pytest.fixture(scope="module")
def built(truth, truth_models, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cc-features")
    base, ft = truth_models["base"], truth_models["planted"]
    corpus = str(truth["planted"] / "eval.jsonl")
    kw = {"layer": LAYER, "expansion": 1, "k": 4, "n_tokens": 2048, "batch_size": 256}
    train_crosscoder(base, ft, root / "cc", corpus=corpus, seq_len=32, quiet=True, **kw)
    dbs = {}
    for side, model, spec in (
        ("base", base, "crosscoder:{}"),
        ("ft", ft, "crosscoder:{}@finetuned"),
    ):
        cfg = BuildConfig(model=str(truth["base"]), sources=(spec.format(root / "cc"),),
                          corpus=corpus, n_tokens=1200, seq_len=SEQ, batch_size=8, k=4,
                          quantiles=2, per_quantile=1, negatives=2)  # fmt: skip
        build_features(model, cfg, str(root / f"{side}.db"), quiet=True)
        dbs[side] = root / f"{side}.db"
    return {"cc": root / "cc", "dbs": dbs}


def _by_hand(model, folder, side: str, token_ids: list[int]) -> torch.Tensor:
    """[pos d_sae] from the crosscoder's weights: the other model's half of the input is its
    mean (b_dec), so only this side's encoder columns see the activation."""
    sae, info = load_sae(folder), CrosscoderInfo.load(folder)
    d = info.d_model
    own = slice(0, d) if side == "base" else slice(d, 2 * d)
    scale = info.scale_base if side == "base" else info.scale_finetuned
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([token_ids]), names=[info.hook_name])
        x = cache[info.hook_name][0].float() * scale
        pre = (x - sae.b_dec[own]) @ sae.W_enc[own] + sae.b_enc
        return sae.activate(pre) * (sae.W_dec[:, own] / scale).norm(dim=-1)


@pytest.mark.parametrize("side", ["base", "ft"])
def test_crosscoder_latents_in_a_feature_database(built, truth_models, side) -> None:
    model = truth_models["base" if side == "base" else "planted"]
    with open_db(str(built["dbs"][side]), readonly=True) as db:
        (src,) = db.sources()
        name = "crosscoder:cc" + ("@finetuned" if side == "ft" else "")
        assert src["source"] == name and src["kind"] == "latent" and src["n_features"] == 48
        best = max(range(48), key=lambda j: db.feature(name, j)["max"])
        feature = db.feature(name, best)
        assert feature["max"] > 0 and len(feature["logits"]["promotes"]) > 0
        ex = next(iter(db.examples(name, best, "top")))
        want = _by_hand(model, built["cc"], "base" if side == "base" else "ft", ex.token_ids)
        torch.testing.assert_close(torch.tensor(ex.values), want[:, best], atol=1e-4, rtol=1e-4)
        # search by inference on the example's text (tokenised without BOS, so its activations
        # differ from the stored window's): every latent's values equal the weights by hand
        text = model.tokenizer.decode(ex.token_ids[1:])
        found = search_infer(db, model, text, name, limit=48)
        want = _by_hand(model, built["cc"], "base" if side == "base" else "ft", found["token_ids"])
        assert len(found["features"]) == 48
        for f in found["features"]:
            torch.testing.assert_close(torch.tensor(f["values"]), want[:, f["index"]], atol=1e-4, rtol=1e-4)  # fmt: skip
        maxima = [f["max"] for f in found["features"]]
        assert maxima == sorted(maxima, reverse=True)
        assert maxima[0] == pytest.approx(float(want[1:].max()), abs=1e-4)


def test_bad_crosscoder_source(truth_models, built, tmp_path) -> None:
    from mechscope.features.sources import parse_source

    with pytest.raises(MechscopeError, match="crosscoder.json is missing"):
        parse_source(truth_models["base"], f"crosscoder:{tmp_path}")
    with pytest.raises(MechscopeError, match="use base or finetuned"):
        from mechscope.diff.crosscoder import crosscoder_readout

        crosscoder_readout(built["cc"], "chat")


def test_crosscoder_latents_browse_in_the_web_ui(built, truth_models) -> None:
    from starlette.testclient import TestClient

    from mechscope.server.app import create_app

    app = create_app(str(built["dbs"]["ft"]), model=truth_models["planted"])
    with TestClient(app) as client:
        name = "crosscoder:cc@finetuned"
        assert [s["source"] for s in client.get("/api/sources").json()] == [name]
        feature = client.get(f"/api/features/{name}/0").json()
        assert feature["source"] == name and feature["index"] == 0
        page = client.get(f"/feature/{name}/0")
        assert page.status_code == 200 and name in page.text
        found = client.post("/api/infer", json={"text": "zoq pim pam", "source": name, "limit": 2})
        assert found.status_code == 200 and len(found.json()["features"]) == 2
