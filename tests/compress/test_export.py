"""The export folder: plain transformers loads it, mechscope.load reads the packed codes back,
and the packed file's size is the accounted size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from compress_helpers import GS, tiny_llama
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import mechscope
from mechscope.compress import CompressConfig, compress
from mechscope.compress.packing import pack_bits, unpack_bits
from mechscope.compress.quant import FULL, group_bits
from mechscope.errors import MechscopeError

TOKENS = torch.randint(2, 101, (2, 12), generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_roundtrip(bits: int) -> None:
    codes = torch.randint(0, 2**bits, (999,), generator=torch.Generator().manual_seed(bits))
    data = pack_bits(codes, bits)
    assert data.numel() == -(-999 * bits // 8)
    assert torch.equal(unpack_bits(data, bits, 999), codes)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, calib: list[torch.Tensor]) -> tuple:
    model = tiny_llama()
    out = tmp_path_factory.mktemp("export") / "tiny-6bit"
    config = CompressConfig(bits=6.0, method="awq", group_size=GS, quantizer="gptq")
    result = compress(model, config, out=out, calib=calib)
    with torch.no_grad():
        logits = model.forward(TOKENS)
    return out, result, logits


def test_transformers_loads_the_folder(exported: tuple) -> None:
    out, _, logits = exported
    hf = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        assert torch.equal(hf(TOKENS).logits, logits)


def test_mechscope_load_reads_the_packed_form(exported: tuple) -> None:
    out, result, logits = exported
    (out / "model.safetensors").rename(out / "moved.safetensors")  # prove it is not read
    try:
        model = mechscope.load(str(out), progress=False)
    finally:
        (out / "moved.safetensors").rename(out / "model.safetensors")
    assert model.provenance["source"] == "packed"
    with torch.no_grad():
        assert torch.equal(model.forward(TOKENS), logits)


def test_packed_size_is_the_accounted_size(exported: tuple) -> None:
    out, result, _ = exported
    layout, widths = result.layout, result.widths
    assert result.effective_bits <= 6.0
    want = 0
    for info in layout.weights:
        w = widths[info.offset : info.offset + info.n_groups]
        for b in (2, 3, 4, 8):
            want += -(-int((w == b).sum()) * GS * b // 8) + 4 * int((w == b).sum())
        want += 2 * GS * int((w == FULL).sum())
    got = 0
    with safe_open(str(out / "packed.safetensors"), "pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            if ".codes" in key or key.endswith((".scale", ".zero")):
                t = f.get_tensor(key)
                got += t.numel() * t.element_size()
    assert got == want
    accounted = sum(group_bits(int(b), GS) for b in widths) / 8
    assert abs(got - accounted) <= 8 * len(layout.weights)  # byte padding of each code stream
    assert (
        result.export["sizes"]["packed.safetensors"] < result.export["sizes"]["model.safetensors"]
    )


def test_existing_output_folder(tmp_path: Path) -> None:
    with pytest.raises(MechscopeError, match="exists"):
        compress(tiny_llama(), CompressConfig(bits=6.0, method="uniform", group_size=GS),
                 out=tmp_path)  # fmt: skip
