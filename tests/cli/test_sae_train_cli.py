"""``mechscope sae train`` on stores harvested from a tiny model (an SAE and a transcoder)."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

from mechscope.activations import harvest
from mechscope.cli.main import cli
from mechscope.corpus import Corpus
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer
from mechscope.sae import load_sae

WORDS = [f"w{i}" for i in range(90)]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 200))) for _ in range(60)]
    model = HookedModel(tiny_model("llama"), tiny_tokenizer(WORDS))
    corpus = Corpus.from_texts(texts, name="toy")
    root = tmp_path_factory.mktemp("sae-cli")
    one = harvest(
        model,
        "blocks.1.hook_resid_post",
        corpus,
        2048,
        root / "resid",
        seq_len=32,
        split="all",
        progress=False,
    )
    two = harvest(
        model, ["blocks.1.hook_resid_mid", "blocks.1.hook_mlp_out"], corpus, 2048, root / "mlp", seq_len=32,
        split="all", progress=False,
    )  # fmt: skip
    return one, two


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_sae_train_writes_a_loadable_sae(stores, tmp_path, arch):
    store = stores[0]
    out = tmp_path / "sae"
    args = ["train", "--acts", str(store.folder), "--arch", arch, "--k", "4", "--expansion", "2"]
    result = CliRunner().invoke(
        cli, ["sae", *args, "--batch-size", "256", "--lr", "3e-3", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "fvu" in result.output and "saved to" in result.output
    loaded = load_sae(out)
    m = store.manifest
    assert loaded.cfg.arch == arch and loaded.cfg.d_in == m.d_in and loaded.cfg.d_sae == 2 * m.d_in
    assert loaded.cfg.hook_name == "blocks.1.hook_resid_post"
    assert loaded.cfg.include_first is False  # the store left the first positions out
    training = json.loads((out / "training.json").read_text())
    assert training["steps"] == 2048 // 256 and training["tokens"] == 2048
    assert 0 <= training["fvu"] < 1.5 and training["history"]
    assert not (out / "checkpoints").exists()
    x = store.tensor()[:100]
    assert loaded(x).x_hat.shape == x.shape


def test_sae_train_transcoder(stores, tmp_path):
    out = tmp_path / "tc"
    args = [
        "train",
        "--acts",
        str(stores[1].folder),
        "--arch",
        "topk",
        "--k",
        "4",
        "--expansion",
        "2",
    ]
    result = CliRunner().invoke(
        cli, ["sae", *args, "--batch-size", "256", "--tokens", "1024", "--out", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    tc = load_sae(out)
    assert tc.cfg.is_transcoder and tc.cfg.out_hook_name == "blocks.1.hook_mlp_out"
    assert (
        json.loads((out / "cfg.json").read_text())["metadata"]["hook_name_out"]
        == "blocks.1.hook_mlp_out"
    )


def test_sae_train_errors(stores, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(
        cli, ["sae", "train", "--acts", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    )
    assert missing.exit_code == 2 and missing.output.startswith("error: ")
    small = [
        "sae",
        "train",
        "--acts",
        str(stores[0].folder),
        "--tokens",
        "10",
        "--out",
        str(tmp_path / "o"),
    ]
    result = runner.invoke(cli, small)
    assert result.exit_code == 2 and "less than one batch of 4096" in result.output
    assert len(result.output.strip().splitlines()) == 1
