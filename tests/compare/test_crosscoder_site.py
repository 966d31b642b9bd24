"""A crosscoder at a site other than the residual stream: harvested, read, browsed and run from the
CLI at that hook (``train_crosscoder(site=...)``, ``mechscope diff --cc-site``)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner
from diff_truth import TINY_PLANT

from mechscope.activations.store import ActivationStore
from mechscope.cli.main import cli
from mechscope.corpus import from_files
from mechscope.corpus.windows import windows
from mechscope.diff.crosscoder import crosscoder_readout
from mechscope.diff.crosscoder_train import crosscoder_inputs, crosscoder_site, train_crosscoder
from mechscope.errors import MechscopeError
from mechscope.features.sources import parse_source
from mechscope.toys.finetune import trigger_spans

HOOK, RESID, SEQ = "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post", 32


@pytest.fixture(scope="module")
def site_cc(truth, truth_models, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("cc-site") / "cc"
    corpus = from_files(truth["planted"] / "eval.jsonl")
    base, ft = truth_models["base"], truth_models["planted"]
    kw = {"expansion": 1, "k": 4, "n_tokens": 2048, "batch_size": 256, "steps": 30}
    _, info, _ = train_crosscoder(
        base, ft, folder, layer=1, site="hook_mlp_out", corpus=corpus, seq_len=SEQ, quiet=True, **kw
    )
    return {"folder": folder, "corpus": corpus, "info": info}


def _cache(model, ids) -> dict:
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([list(ids)]), names=[HOOK, RESID])
    return {name: cache[name][0].float() for name in (HOOK, RESID)}


def test_the_harvest_reads_the_site(site_cc, truth_models) -> None:
    """The stores' first rows are the hook's activations of the first training window (position 0
    left out), as run_with_cache gives them, and not the residual stream's."""
    info = site_cc["info"]
    assert (info.layer, info.hook_name) == (1, HOOK)
    first = next(windows(site_cc["corpus"], truth_models["base"].tokenizer, seq_len=SEQ,
                         seed=0, split="train"))  # fmt: skip
    for store_name, model in (("acts-base", "base"), ("acts-finetuned", "planted")):
        store = ActivationStore.open(site_cc["folder"] / store_name)
        assert store.sites == [HOOK]
        rows = store.tensor(HOOK)[: SEQ - 1].float()
        cache = _cache(truth_models[model], first)
        torch.testing.assert_close(rows, cache[HOOK][1:], atol=1e-4, rtol=1e-4)
        assert not torch.allclose(rows, cache[RESID][1:], atol=1e-2)


def test_the_inputs_follow_the_hook(site_cc, truth_models) -> None:
    """crosscoder_inputs (the readout's relative norms, latent scaling and firing all use it) is
    both models' hook activations times their scales; with another hook the inputs change."""
    info, corpus = site_cc["info"], site_cc["corpus"]
    base, ft = truth_models["base"], truth_models["planted"]
    x, wins = crosscoder_inputs(base, ft, info, corpus, 200, seq_len=SEQ, split="test")
    n = len(wins[0].ids) - 1
    d = info.d_model
    want_base = _cache(base, wins[0].ids)[HOOK][1:] * info.scale_base
    want_ft = _cache(ft, wins[0].ids)[HOOK][1:] * info.scale_finetuned
    torch.testing.assert_close(x[:n, :d], want_base, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x[:n, d:], want_ft, atol=1e-4, rtol=1e-4)
    other = dataclasses.replace(info, hook_name=RESID)
    y, _ = crosscoder_inputs(base, ft, other, corpus, 200, seq_len=SEQ, split="test")
    assert not torch.allclose(x, y, atol=1e-2)


def test_the_feature_readout_follows_the_site(site_cc, truth_models) -> None:
    """The feature database's source reads the crosscoder at its own hook: on that hook's cached
    activations it gives the latents computed by hand from the weights."""
    from mechscope.sae import load_sae

    folder, info = site_cc["folder"], site_cc["info"]
    base = truth_models["base"]
    source = parse_source(base, f"crosscoder:{folder}")
    assert source.hook_name == HOOK
    readout, _ = crosscoder_readout(folder, "base")
    sae = load_sae(folder)
    d = info.d_model
    doc = next(iter(site_cc["corpus"].documents("test")))
    x = _cache(base, base.tokenizer(doc, add_special_tokens=False)["input_ids"][:SEQ])
    acts = x[HOOK] * info.scale_base
    with torch.no_grad():
        pre = (acts - sae.b_dec[:d]) @ sae.W_enc[:d] + sae.b_enc
        want = sae.activate(pre) * (sae.W_dec[:, :d] / info.scale_base).norm(dim=-1)
        got = readout.read(x[HOOK][None])[0]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert want.abs().sum() > 0


def test_crosscoder_site_names(llama) -> None:
    assert crosscoder_site(llama, 1) == (1, RESID)
    assert crosscoder_site(llama, 1, "hook_mlp_out") == (1, HOOK)
    assert crosscoder_site(llama, None, HOOK) == (1, HOOK)
    assert crosscoder_site(llama, 0, "hook_attn_out") == (0, "blocks.0.hook_attn_out")
    bad = {
        ("hook_nope", 1): "unknown hook name 'blocks.1.hook_nope'",
        ("mlp.hook_post", 1): "width d_model",
        ("blocks.0.hook_mlp_out", 1): "at layer 0, not the layer 1",
        ("hook_mlp_out", None): "needs a layer",
        ("hook_mlp_out", 7): "layer must lie in",
    }
    for (site, layer), message in bad.items():
        with pytest.raises(MechscopeError, match=message):
            crosscoder_site(llama, layer, site)


def test_diff_cli_trains_and_reads_at_the_site(truth, tmp_path) -> None:
    """`mechscope diff --crosscoder --cc-site` trains at the hook and scores the latents on the
    trigger words (one token each here, so as many as there are phrases in the test split); the
    same folder asked for another site, or an unsupported site, is a one-line error; a corpus that
    runs out before --cc-tokens is said so on stderr."""
    out, folder = tmp_path / "diff.json", tmp_path / "cc"
    args = ["diff", str(truth["base"]), str(truth["planted"]), "--no-lens", "--tokens", "300"]
    args += ["--seq-len", str(SEQ), "--crosscoder", str(folder), "--expansion", "1", "--k", "4"]
    args += ["--cc-tokens", "2048", "--cc-batch-size", "256", "--cc-steps", "20", "--quiet"]
    result = CliRunner().invoke(cli, [*args, "--cc-site", HOOK, "--json", str(out)])
    assert result.exit_code == 0, result.output
    cc = json.loads(out.read_text())["crosscoder"]
    assert (cc["hook_name"], cc["layer"], cc["planted"]) == (HOOK, 1, "trigger words")
    docs = from_files(truth["planted"] / "eval.jsonl").documents("test")
    assert cc["planted_tokens"] == sum(len(trigger_spans(t, TINY_PLANT)) for t in docs) > 0
    assert f"crosscoder at {HOOK}" in result.output and "ran out" not in result.stderr
    more = [*args[:-7], "--cc-tokens", "1000000", "--cc-batch-size", "256", "--cc-steps", "2"]
    more[more.index(str(folder))] = str(tmp_path / "cc-all")
    short = CliRunner().invoke(cli, [*more, "--quiet", "--cc-site", HOOK])
    assert short.exit_code == 0 and "note: the corpus ran out after" in short.stderr, short.output
    for extra, message in (
        (["--layer", "1"], f"reads {HOOK}, not {RESID}"),
        (["--layer", "1", "--cc-site", "mlp.hook_post"], "width d_model"),
    ):
        bad = CliRunner().invoke(cli, [*args, *extra])
        assert bad.exit_code == 2, bad.output
        assert bad.stderr.count("\n") == 1 and message in bad.stderr, bad.stderr
