"""The induction evaluation: BOS + L random tokens + the same again, loss on the second copy
without its first token; and its squared-gradient statistic."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from compress_helpers import tiny_llama

from mechscope.compress.calib import repeated_fisher
from mechscope.compress.evaluate import Repeated, repeated_tokens
from mechscope.compress.groups import linear_weights


class _Tok:
    bos_token_id = 1
    eos_token_id = 2


class _Dims:
    d_vocab = 100


class _Model:
    tokenizer = _Tok()
    dims = _Dims()


def test_layout_bos_and_copy() -> None:
    rep = repeated_tokens(_Model(), n=5, seed=3, seq_len=7, ids=(10, 20))
    t = rep.tokens
    assert t.shape == (5, 15) and (t[:, 0] == 1).all()
    assert torch.equal(t[:, 1:8], t[:, 8:]) and ((t[:, 1:] >= 10) & (t[:, 1:] < 20)).all()
    assert rep.start == 9  # the copy starts at 8; its first token is not counted
    assert not torch.equal(t, repeated_tokens(_Model(), 5, seed=4, seq_len=7, ids=(10, 20)).tokens)


def test_losses_count_exactly_the_predictable_copy() -> None:
    rep = repeated_tokens(_Model(), n=3, seed=0, seq_len=6, ids=(10, 30))
    vocab = 32
    # a perfect induction oracle on the counted targets, uniform logits everywhere else
    logits = torch.zeros(3, rep.tokens.shape[1], vocab)
    for p in range(rep.start - 1, rep.tokens.shape[1] - 1):
        logits[torch.arange(3), p, rep.tokens[:, p + 1]] = 50.0
    assert torch.allclose(rep.losses(logits), torch.zeros(3), atol=1e-6)
    # uniform logits: every counted target costs log(vocab); 5 counted per sequence
    flat = rep.losses(torch.zeros(3, rep.tokens.shape[1], vocab))
    assert torch.allclose(flat, torch.full((3,), float(torch.log(torch.tensor(32.0)))))
    ref = F.cross_entropy(logits[:, 6:-1].transpose(1, 2), rep.tokens[:, 7:], reduction="none")
    assert (ref[:, 0] > 1.0).all()  # the uncounted first copy token is not predictable


def test_repeated_fisher_is_the_sum_of_squared_per_sequence_gradients() -> None:
    model = tiny_llama()
    layout = linear_weights(model, group_size=8)
    tokens = torch.cat([torch.full((2, 1), 1), torch.randint(3, 90, (2, 5)).repeat(1, 2)], 1)
    rep = Repeated(tokens, 7)
    got = repeated_fisher(model, layout, rep)
    name = layout.weights[0].name
    p = model.hf.get_parameter(name)
    want = torch.zeros_like(p)
    for i in range(2):
        loss = F.cross_entropy(model.forward(tokens[i : i + 1])[0, 6:-1].float(), tokens[i, 7:])
        (g,) = torch.autograd.grad(loss, [p])
        want += g.square()
    assert torch.allclose(got[name], want, rtol=1e-4, atol=1e-10)
