"""``mechscope.load(..., device_map=...)`` through accelerate: every site reads and writes the
same numbers as the model on one device.

On this CPU machine the split that makes accelerate move weights is disk offloading: layer 1 and
the final norm live on disk and are loaded for their forward only (the case where hooks that read
a module's weights after its forward would see empty tensors). With two GPUs the same check runs
on ``device_map="auto"``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mechscope
from mechscope.errors import MechscopeError
from mechscope.models.tiny import VOCAB, tiny_model, tiny_tokenizer

X = torch.randint(2, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))


def saved(kind: str, folder: Path) -> Path:
    tiny_model(kind).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def offload_map(model: mechscope.HookedModel) -> dict[str, str]:
    f = model.family
    top = {f.embed: "cpu", f.final_norm: "disk", f.unembed: "cpu"}
    if f.pos_embed:
        top[f.pos_embed] = "cpu"
    if f.layers == "model.layers":
        top["model.rotary_emb"] = "cpu"
    layers = {f"{f.layers}.{i}": "disk" if i == 1 else "cpu" for i in range(model.dims.n_layers)}
    return {**top, **layers}


def check_sites_match(ref: mechscope.HookedModel, other: mechscope.HookedModel) -> None:
    names = [n for n in ref.sites if n.startswith(("blocks.1.", "ln_final"))]
    with torch.no_grad():
        a_logits, a = ref.run_with_cache(X, names=names)
        b_logits, b = other.run_with_cache(X, names=names)
        assert torch.equal(a_logits, b_logits.cpu())
        for name in names:
            assert torch.equal(a[name], b[name].cpu()), name
        for name in names:
            if name.endswith("hook_attn_scores"):
                continue

            def edit(t: torch.Tensor, hook: object) -> torch.Tensor:
                return t * 0.5 if t.is_floating_point() else t.flip(-1)

            x = ref.run_with_hooks(X, fwd_hooks=[(name, edit)])
            y = other.run_with_hooks(X, fwd_hooks=[(name, edit)])
            assert torch.equal(x, y.cpu()), name


@pytest.mark.parametrize("kind", ["qwen2_moe", "gpt2"])
def test_disk_offloaded_layers_read_and_write_every_site(kind: str, tmp_path: Path) -> None:
    folder = saved(kind, tmp_path / "model")
    ref = mechscope.load(str(folder), progress=False)
    off = mechscope.load(str(folder), device_map=offload_map(ref), progress=False,
                         offload_folder=tmp_path / "offload")  # fmt: skip
    assert any(p.device.type == "meta" for p in off.hf.parameters())  # really offloaded
    check_sites_match(ref, off)


def test_placement_options_need_a_device_map(tmp_path: Path) -> None:
    with pytest.raises(MechscopeError, match="need a device_map"):
        mechscope.load(str(tmp_path), max_memory={"cpu": "1GB"}, progress=False)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_auto_map_over_two_gpus(tmp_path: Path) -> None:
    folder = saved("mixtral", tmp_path / "model")
    ref = mechscope.load(str(folder), progress=False)
    auto = mechscope.load(str(folder), device_map="auto", progress=False,
                          max_memory={0: "200KB", 1: "1GB"})  # fmt: skip
    assert len({p.device for p in auto.hf.parameters()}) > 1
    check_sites_match(ref, auto)
