"""``mechscope sae eval`` and ``mechscope steer`` on a tiny saved model and a planted SAE."""

import json

import torch
from click.testing import CliRunner

from mechscope.cli.sae_eval import sae_eval
from mechscope.cli.steer import steer
from mechscope.models.tiny import tiny_model
from mechscope.sae import SAE, SAEConfig, save_sae

EVAL_KEYS = {
    "l0", "fvu", "mse", "dead_fraction", "ce_loss_clean", "ce_loss_spliced", "ce_loss_zero",
    "ce_loss_recovered", "kl",
}  # fmt: skip


def saved_identity_sae(folder, d):
    sae = SAE(SAEConfig(arch="relu", d_in=d, d_sae=2 * d, hook_name="blocks.1.hook_resid_post"))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    save_sae(sae, folder)
    return folder


def corpus_file(tmp_path):
    words = [
        "When",
        "Mary",
        "and",
        "John",
        "went",
        "to",
        "the",
        "store",
        ",",
        "John",
        "gave",
        "a",
        "drink",
        "to",
    ]
    g = torch.Generator().manual_seed(0)
    lines = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (60,), generator=g))]
    path = tmp_path / "text.txt"
    path.write_text("\n".join(lines * 4))
    return path


def test_sae_eval_json(tiny_folder, tmp_path):
    d = tiny_model("llama").config.hidden_size
    sae_dir = saved_identity_sae(tmp_path / "sae", d)
    out = tmp_path / "eval.json"
    args = [
        "--model",
        str(tiny_folder),
        "--sae",
        str(sae_dir),
        "--corpus",
        str(corpus_file(tmp_path)),
    ]
    args += ["--tokens", "64", "--seq-len", "16", "--json", str(out), "--quiet"]
    result = CliRunner().invoke(sae_eval, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(data) >= EVAL_KEYS
    assert abs(data["ce_loss_recovered"] - 1) < 1e-4 and data["kl"] < 1e-6
    assert "CE loss recovered" in result.output


def test_steer_prints_both_generations(tiny_folder, tmp_path):
    d = tiny_model("llama").config.hidden_size
    sae_dir = saved_identity_sae(tmp_path / "sae", d)
    out = tmp_path / "steer.json"
    args = ["--model", str(tiny_folder), "--sae", str(sae_dir), "--latent", "3", "--scale", "300"]
    args += ["--prompt", "When Mary and John", "--max-new-tokens", "4", "--json", str(out), "-q"]
    result = CliRunner().invoke(steer, args)
    assert result.exit_code == 0, result.output
    assert "baseline: When Mary and John" in result.output and "steered:" in result.output
    [row] = json.loads(out.read_text())["results"]
    assert row["steered"] != row["baseline"] and row["latent"] == 3
