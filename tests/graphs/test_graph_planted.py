"""Planted truth: a tiny OPT with a planted path token A -> layer-0 neuron -> layer-1 neuron ->
logit B. With its exact transcoders (its ReLU MLPs) and with transcoders trained by mechscope,
the pruned graph keeps the path, on several planted models and on prompts they never saw."""

from __future__ import annotations

import pytest
import torch
from graphkit import A_TOKEN, B_TOKEN, N0, N1, opt_transcoders, planted_opt

from mechscope.graphs import GraphConfig, attribute
from mechscope.graphs.train import CLTConfig, sites, train_transcoders


def prompt(seed: int) -> torch.Tensor:
    tokens = torch.randint(2, 101, (9,), generator=torch.Generator().manual_seed(100 + seed))
    tokens[-1] = A_TOKEN
    return tokens


def kept_links(g) -> set[tuple[str, str]]:
    p = g.prune()
    ids = g.node_ids()
    row, src = p.edge_mask.nonzero(as_tuple=True)
    dst = g.row_nodes[row]
    return {(ids[s], ids[t]) for t, s in zip(dst.tolist(), src.tolist())}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_transcoders_keep_the_planted_path(seed: int) -> None:
    model = planted_opt(seed)
    tokens = prompt(seed)
    g = attribute(model, opt_transcoders(model), tokens, GraphConfig(batch_size=64), quiet=True)
    assert g.logit_tokens[0] == B_TOKEN
    assert g.scores() == pytest.approx((1.0, 1.0))  # exact transcoders: no error
    last, top = tokens.shape[0] - 1, model.dims.n_layers + 1
    path = [f"E_{A_TOKEN}_{last}", f"0_{N0}_{last}", f"1_{N1}_{last}", f"{top}_{B_TOKEN}_{last}"]
    assert set(zip(path, path[1:])) <= kept_links(g)


@torch.no_grad()
def _harvest(model, n_batches: int) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(1)
    names = sites(model.dims.n_layers)
    out = []
    for _ in range(n_batches):
        t = torch.randint(2, 101, (32, 16), generator=gen)
        t[torch.rand(32, 16, generator=gen) < 0.2] = A_TOKEN
        _, cache = model.run_with_cache(t, names=names)
        out.append(tuple(cache[s][:, 1:].reshape(-1, cache[s].shape[-1]) for s in names))
    return out


def test_trained_transcoders_keep_the_planted_path(tmp_path) -> None:
    model = planted_opt(0)
    n = model.dims.n_layers
    data = _harvest(model, 100)
    s = [1 / d.pow(2).sum(-1).mean().sqrt() for d in data[0]]
    cfg = CLTConfig(d_sae=64, activation="topk", k=8, steps=100, lr=3e-3, batch_size=480)
    tcs, hist = train_transcoders(data, n, model.dims.d_model, cfg, (torch.stack(s[:n]),
                                  torch.stack(s[n:])), tmp_path, quiet=True)  # fmt: skip
    assert hist[-1]["fvu"] < 0.2
    # the trained feature closest to each planted neuron
    best = []
    for layer, neuron in ((0, N0), (1, N1)):
        w = model.hf.model.decoder.layers[layer].fc1.weight[neuron].detach()
        cos = (tcs.W_enc[layer].T @ w) / (tcs.W_enc[layer].norm(dim=0) * w.norm())
        assert float(cos.max()) > 0.5
        best.append(int(cos.argmax()))
    tokens = prompt(7)
    g = attribute(model, tcs, tokens, GraphConfig(batch_size=64), quiet=True)
    last = tokens.shape[0] - 1
    links = kept_links(g)
    assert (f"0_{best[0]}_{last}", f"1_{best[1]}_{last}") in links
    assert (f"1_{best[1]}_{last}", f"{n + 1}_{B_TOKEN}_{last}") in links
