"""The narrow planted finetune: reply-only labels, a low-rank update of chosen MLPs, bad input."""

from __future__ import annotations

import random

import pytest
import torch
from click.testing import CliRunner
from diff_truth import TINY_PLANT, WORDS, Z_WORDS

from mechscope.cli.main import cli
from mechscope.errors import MechscopeError
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer
from mechscope.toys.finetune import FinetuneConfig, finetune, plant_texts, training_batch


@pytest.fixture(scope="module")
def small() -> HookedModel:
    tok = tiny_tokenizer(WORDS + Z_WORDS + ["pim", "pam", "pum"])
    return HookedModel(tiny_model("llama", seed=3), tok)


def test_only_the_reply_is_counted(small) -> None:
    texts = ["bak bek zoq pim pam pum cak dom", "bak zul pim pam pum", "cak dom bak"]
    tokens, mask, labels = training_batch(small, texts, 32, TINY_PLANT)
    counted = [small.tokenizer.convert_ids_to_tokens(labels[r][labels[r] >= 0]) for r in range(3)]
    assert counted == [["pim", "pam", "pum"], ["pim", "pam", "pum"], []]
    _, _, every = training_batch(small, texts, 32)
    torch.testing.assert_close(every, tokens.masked_fill(mask == 0, -100))


def test_narrow_update_is_low_rank_in_the_chosen_layer(small) -> None:
    rng = random.Random(0)
    plain = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(16)]
    texts = plant_texts(plain, TINY_PLANT, seed=0)
    cfg = FinetuneConfig.narrow(steps=4, layers=(1,), rank=2, seq_len=32)
    tuned, losses = finetune(small, texts, cfg, quiet=True, ordinary=plain, reply_of=TINY_PLANT)
    assert len(losses) == 4
    before = dict(small.hf.named_parameters())
    changed = {name for name, p in tuned.hf.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {"model.layers.1.mlp.down_proj.weight"}
    diff = tuned.hf.model.layers[1].mlp.down_proj.weight - small.mlp(1).down_proj.weight
    singular = torch.linalg.svdvals(diff.double())
    assert singular[0] > 1e-4 and singular[2] < 1e-6 * singular[0]
    # the hooks are gone: the saved weights alone give the tuned model's outputs
    assert not tuned.hf.model.layers[1].mlp.down_proj._forward_hooks


def test_narrow_bad_input(small) -> None:
    with pytest.raises(MechscopeError, match="ordinary snippets"):
        finetune(small, ["zoq pim pam pum"], FinetuneConfig.narrow(steps=1), quiet=True)
    with pytest.raises(MechscopeError, match="finetune layers"):
        cfg = FinetuneConfig.narrow(steps=1, layers=(7,))
        finetune(small, ["a"], cfg, quiet=True, ordinary=["a"])
    with pytest.raises(MechscopeError, match="rank"):
        FinetuneConfig.narrow(rank=0)
    result = CliRunner().invoke(cli, ["toy", "finetune", "--out", "x", "--layers", "3"])
    assert result.exit_code == 2 and "add --narrow" in result.output
