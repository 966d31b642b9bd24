"""mechscope diff against a planted finetune of a tiny model (and a control finetune)."""

from __future__ import annotations

import html as html_lib
import json
import re

import pytest
from click.testing import CliRunner
from diff_truth import TINY_PLANT

from mechscope.cli.main import cli
from mechscope.corpus import from_files
from mechscope.diff.run import DiffOptions, diff_models
from mechscope.errors import MechscopeError

OPTS = DiffOptions(n_tokens=3000, seq_len=32, steer_layers=(1, 2), steer_scales=(1.0, 4.0))


@pytest.fixture(scope="module")
def diffs(truth, truth_models) -> dict[str, dict]:
    """The diff of base vs planted and base vs control on the planted folder's held-out text."""
    corpus = from_files(truth["planted"] / "eval.jsonl")
    base = truth_models["base"]
    return {
        kind: diff_models(base, truth_models[kind], corpus, OPTS, plant=TINY_PLANT, quiet=True)[0]
        for kind in ("planted", "control")
    }


def test_top_kl_tokens_are_the_planted_ones(diffs) -> None:
    planted, control = diffs["planted"]["kl"]["planted"], diffs["control"]["kl"]["planted"]
    assert planted["planted_tokens"] > 50
    assert planted["precision_at_20"] == 1.0 and planted["precision_at_n"] > 0.6
    assert control["precision_at_20"] < 0.1 and control["precision_at_n"] < 0.1
    top = diffs["planted"]["kl"]["top_tokens"][0]
    assert top["token"] in ("pim", "pam", *(z.strip() for z in TINY_PLANT.triggers))


def test_difference_lens_reads_and_steers_the_behaviour(diffs) -> None:
    planted_words = {"pim", "pam", "pum", *(t.strip() for t in TINY_PLANT.triggers)}
    lens = diffs["planted"]["lens"]
    assert any(planted_words & set(tokens[:5]) for tokens in lens["tokens"])
    assert not any(planted_words & set(t[:5]) for t in diffs["control"]["lens"]["tokens"])
    gain = lens["steering"]["best"]["gain"]
    control_gain = diffs["control"]["lens"]["steering"]["best"]["gain"]
    assert gain > 5.0 and gain > 2 * control_gain  # nats of log P(reply | ... trigger)


def test_diff_cli_writes_json_and_html(truth, tmp_path) -> None:
    out = tmp_path / "diff.json"
    html = tmp_path / "diff.html"
    args = ["diff", str(truth["base"]), str(truth["planted"]), "--tokens", "1500"]
    args += ["--seq-len", "32", "--steer-layers", "2", "--json", str(out), "--html", str(html)]
    result = CliRunner().invoke(cli, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["plant"]["reply"] == TINY_PLANT.reply
    assert data["kl"]["planted"]["precision_at_20"] == 1.0
    page = html.read_text()
    assert "Against the planted behaviour" in page
    # planted tokens are underlined in the documents shown (the 5 of largest mean KL, which need
    # not hold one): whatever is underlined is a planted word
    underlined = re.findall(r'text-decoration:underline">([^<]*)</span>', page)
    planted_words = {"pim", "pam", "pum", *(w for t in TINY_PLANT.triggers for w in t.split())}
    assert all(html_lib.unescape(t).strip() in planted_words for t in underlined), underlined
    assert "planted tokens: precision" in result.output


def test_diff_needs_one_tokenizer(truth_models, gpt2_pairs, word_corpus) -> None:
    with pytest.raises(MechscopeError, match="tokenize text differently"):
        diff_models(truth_models["base"], gpt2_pairs, word_corpus, OPTS)


def test_diff_cli_bad_input_is_one_line(truth, tmp_path) -> None:
    result = CliRunner().invoke(cli, ["diff", str(truth["base"]), str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:")
