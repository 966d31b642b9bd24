"""CKA and Procrustes: the streamed sums equal the direct computation on stored activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechscope.compare.align import aligned_positions, chunks
from mechscope.compare.run import compare_models, default_layers, residuals
from mechscope.compare.similarity import SimilarityStats, cka_direct, procrustes_direct
from mechscope.errors import MechscopeError


def _direct(x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    la, lb = x.shape[1], y.shape[1]
    cka = [[cka_direct(x[:, i], y[:, j]) for j in range(lb)] for i in range(la)]
    proc = [[procrustes_direct(x[:, i], y[:, j]) for j in range(lb)] for i in range(la)]
    return np.array(cka), np.array(proc)


@pytest.mark.parametrize("batch", [7, 64, 500])
def test_streamed_equals_direct_planted(batch: int) -> None:
    """Planted: layer 0 of B is a noisy linear map of layer 0 of A (other widths, big offsets)."""
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(500, 3, 24, generator=gen) * 2 + 40
    x[..., 0] += 300  # a massive residual-stream dimension
    y = torch.randn(500, 2, 10, generator=gen)
    y[:, 0] = x[:, 0] @ torch.randn(24, 10, generator=gen) + 0.5 * y[:, 0]
    stats = SimilarityStats()
    for start in range(0, 500, batch):
        stats.add(x[start : start + batch], y[start : start + batch])
    result = stats.result()
    cka, proc = _direct(x, y)
    np.testing.assert_allclose(result.cka, cka, atol=1e-6)
    np.testing.assert_allclose(result.procrustes, proc, atol=1e-6)
    assert cka[0, 0] > 0.3 > 5 * np.abs(cka[1:]).max()  # the planted pair stands out


def test_invariances() -> None:
    """CKA is invariant to rotation and isotropic scale; Procrustes is 1 for a rotated copy."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 1, 16, generator=gen)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen))
    stats = SimilarityStats()
    stats.add(x, 3 * x @ q + 1.0)
    result = stats.result()
    assert result.cka[0][0] == pytest.approx(1.0, abs=1e-6)
    assert result.procrustes[0][0] == pytest.approx(1.0, abs=1e-6)


def test_too_few_tokens() -> None:
    stats = SimilarityStats()
    stats.add(torch.randn(3, 1, 4), torch.randn(3, 1, 4))
    with pytest.raises(MechscopeError, match="at least 4 tokens"):
        stats.result()


def test_model_against_itself(llama, word_corpus) -> None:
    result = compare_models(llama, llama, word_corpus, n_tokens=300, seq_len=16, quiet=True)
    assert result.n_tokens == 300
    np.testing.assert_allclose(np.diag(result.cka), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.diag(result.procrustes), 1.0, atol=1e-6)
    assert np.array(result.cka).max() <= 1 + 1e-6


def _stored(model, model_b, corpus, layers_a, layers_b, n):
    """The aligned activations gathered by hand, chunk by chunk (no batching, no padding)."""
    xs, ys = [], []
    for chunk in chunks(corpus, model.tokenizer, model_b.tokenizer, seq_len=16):
        x, _ = residuals(model, [chunk.ids_a], layers_a)
        y, _ = residuals(model_b, [chunk.ids_b], layers_b)
        keep = [(i, j) for i, j in zip(chunk.pos_a, chunk.pos_b, strict=True) if i > 0]
        xs.append(x[0, [i for i, _ in keep]])
        ys.append(y[0, [j for _, j in keep]])
        if sum(len(t) for t in xs) >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def test_compare_models_equals_direct_on_stored_activations(llama, neox, word_corpus) -> None:
    result = compare_models(
        llama, neox, word_corpus, n_tokens=250, seq_len=16, batch_size=3, quiet=True
    )
    x, y = _stored(llama, neox, word_corpus, [0, 1, 2], [0, 1, 2], 250)
    cka, proc = _direct(x, y)
    np.testing.assert_allclose(result.cka, cka, atol=1e-5)
    np.testing.assert_allclose(result.procrustes, proc, atol=1e-5)


def test_different_tokenizers_and_widths(llama, gpt2_pairs, word_corpus, texts) -> None:
    """Word tokens vs two-character pieces: the aligned positions are the ends of words, and the
    scores over them equal the direct computation (widths 48 and 32)."""
    chunk = next(chunks(word_corpus, llama.tokenizer, gpt2_pairs.tokenizer, seq_len=16))
    # 16 pieces of B are the first 8 three-letter words: each word's end is its second piece
    assert len(chunk.ids_b) == 16 and len(chunk.ids_a) == 16
    assert chunk.pos_a == list(range(8)) and chunk.pos_b == list(range(1, 16, 2))
    result = compare_models(
        llama, gpt2_pairs, word_corpus, n_tokens=200, seq_len=16, batch_size=4, quiet=True
    )
    assert (len(result.layers_a), len(result.layers_b)) == (3, 2)
    x, y = _stored(llama, gpt2_pairs, word_corpus, [0, 1, 2], [0, 1], 200)
    cka, proc = _direct(x, y)
    np.testing.assert_allclose(result.cka, cka, atol=1e-5)
    np.testing.assert_allclose(result.procrustes, proc, atol=1e-5)


def test_aligned_positions() -> None:
    # "ab cd": A = [ab, cd] ends (2, 5); B = [a, b, c, d] ends (1, 2, 4, 5)
    assert aligned_positions([2, 5], [1, 2, 4, 5]) == ([0, 1], [1, 3])
    # a character split into two byte pieces: the piece that completes it is kept
    assert aligned_positions([1, 3, 3], [1, 2, 3]) == ([0, 2], [0, 2])


def test_slow_tokenizer_is_one_line_error(llama, word_corpus) -> None:
    class Slow:
        is_fast = False

        def get_vocab(self):
            return {}

    with pytest.raises(MechscopeError, match="not a fast tokenizer"):
        next(chunks(word_corpus, llama.tokenizer, Slow()))


def test_default_layers() -> None:
    assert default_layers(5) == [0, 1, 2, 3, 4]
    layers = default_layers(30)
    assert len(layers) == 12 and layers[0] == 0 and layers[-1] == 29


def test_compare_cli(llama, neox, texts, tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from mechscope.cli.main import cli

    for name, model in (("a", llama), ("b", neox)):
        model.hf.save_pretrained(tmp_path / name)
        model.tokenizer.save_pretrained(tmp_path / name)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = {k: tmp_path / f"s.{k}" for k in ("json", "html", "png")}
    args = ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--corpus", str(corpus)]
    args += ["--tokens", "200", "--seq-len", "16", "--layers-b", "0,2", "-q"]
    args += [x for k, p in out.items() for x in (f"--{k}", str(p))]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out["json"].read_text())
    assert data["layers_a"] == [0, 1, 2] and data["layers_b"] == [0, 2]
    assert np.array(data["cka"]).shape == (3, 2) and np.array(data["procrustes"]).shape == (3, 2)
    assert out["png"].read_bytes()[:4] == b"\x89PNG" and "<img" in out["html"].read_text()
    bad = CliRunner().invoke(cli, [*args[:5], "--tokens", "2"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: --tokens must be at least 4")
