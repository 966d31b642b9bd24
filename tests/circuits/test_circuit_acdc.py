"""ACDC against brute force on a one-layer, one-head GPT-2 (8 edges, 256 circuits).

The brute force builds each circuit's run by hand from site hooks alone (one forward per receiver,
no circuit engine): the port inputs are clean or corrupted writer outputs, chosen edge by edge.
ACDC's greedy rule replayed on that exhaustive table must pick the same circuit, and the distance
ACDC reports must be the table's.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from conftest import toy_batch
from mechscope import HookedModel
from mechscope.circuits import Graph, acdc
from mechscope.tasks.metrics import kl_to_clean


def one_head_model() -> HookedModel:
    torch.manual_seed(3)
    config = GPT2Config(n_embd=16, n_layer=1, n_head=1, n_positions=16, vocab_size=101)
    hf = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.3)  # large weights: every edge matters by a different amount
    return HookedModel(hf)


class HandBuilt:
    """Distance of any edge subset of the 1-layer graph, computed from scratch with site hooks."""

    def __init__(self, model: HookedModel, batch) -> None:
        self.m, self.b = model, batch
        names = ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_result", "blocks.0.hook_mlp_out"]
        names += ["blocks.0.hook_resid_mid"]
        with torch.no_grad():
            self.clean_logits, self.c = model.run_with_cache(batch.clean_tokens, names)
            _, self.x = model.run_with_cache(batch.corrupt_tokens, names)
        c = self.c
        self.bias = c["blocks.0.hook_resid_mid"] - c["blocks.0.hook_resid_pre"]
        self.bias = self.bias - c["blocks.0.attn.hook_result"][:, :, 0]
        self.memo: dict[tuple, torch.Tensor] = {}

    def pick(self, name: str, keep: bool) -> torch.Tensor:
        t = (self.c if keep else self.x)[name]
        return t[:, :, 0] if t.ndim == 4 else t

    def run(self, hooks, names=()):
        with torch.no_grad():
            return self.m.run_with_cache(self.b.clean_tokens, list(names), fwd_hooks=hooks)

    def port(self, c: str, keep: bool) -> torch.Tensor:
        """q, k or v when the port reads the clean (keep) or corrupted embeddings."""
        key = (c, keep)
        if key not in self.memo:
            x = self.pick("blocks.0.hook_resid_pre", keep)
            hook = ("blocks.0.hook_resid_pre", lambda t, h: x)
            self.memo[key] = self.run([hook], [f"blocks.0.attn.hook_{c}"])[1][
                f"blocks.0.attn.hook_{c}"
            ]
        return self.memo[key]

    def head(self, bits: tuple[bool, ...]) -> torch.Tensor:
        if bits not in self.memo:
            values = {c: self.port(c, k) for c, k in zip("qkv", bits)}
            hooks = [(f"blocks.0.attn.hook_{c}", lambda t, h: values[h.name[-1]]) for c in "qkv"]
            cache = self.run(hooks, ["blocks.0.attn.hook_result"])[1]
            self.memo[bits] = cache["blocks.0.attn.hook_result"][:, :, 0]
        return self.memo[bits]

    def mlp(self, mid: torch.Tensor, key: tuple) -> torch.Tensor:
        if key not in self.memo:
            hook = ("blocks.0.hook_resid_mid", lambda t, h: mid)
            self.memo[key] = self.run([hook], ["blocks.0.hook_mlp_out"])[1]["blocks.0.hook_mlp_out"]
        return self.memo[key]

    def distance(self, s: dict[tuple[str, str], bool]) -> float:
        emb, out = "blocks.0.hook_resid_pre", "blocks.0.hook_mlp_out"
        qkv_bits = tuple(s[("input", f"a0.h0<{c}>")] for c in "qkv")
        head = self.head(qkv_bits)
        head_x = self.pick("blocks.0.attn.hook_result", False)

        def chosen(src: str, dst: str) -> torch.Tensor:
            keep = s[(src, dst)]
            if src == "input":
                return self.pick(emb, keep)
            if src == "a0.h0":
                return head if keep else head_x
            return mlp if keep else self.pick(out, False)

        mid = chosen("input", "m0") + chosen("a0.h0", "m0") + self.bias
        key = ("mlp", qkv_bits, s[("input", "m0")], s[("a0.h0", "m0")])
        mlp = self.mlp(mid, key)
        final = sum(chosen(u, "logits") for u in ("input", "a0.h0", "m0")) + self.bias
        logits, _ = self.run([("blocks.0.hook_resid_post", lambda t, h: final)])
        return float(kl_to_clean(logits, self.clean_logits, self.b).mean())


def replay_acdc(graph: Graph, table: dict[frozenset, float], threshold: float) -> frozenset:
    """ACDC's rule (see mechscope.circuits.acdc) on the exhaustive table."""
    kept = set(graph.edge_names())
    current = table[frozenset(kept)]
    for port in reversed(graph.ports):
        fed = graph.port_nodes(port) if port != "logits" else ()
        if port != "logits" and not any(e[0] in fed for e in kept):
            kept -= {e for e in kept if e[1] == port}
            continue
        for src in reversed(graph.nodes):
            if (src, port) in kept:
                d = table[frozenset(kept - {(src, port)})]
                if d - current < threshold:
                    kept.discard((src, port))
                    current = d
    return frozenset(kept)


@pytest.fixture(scope="module")
def exhaustive() -> tuple[HookedModel, object, dict[frozenset, float]]:
    model, batch = one_head_model(), toy_batch(b=2, p=5)
    edges = Graph.from_dims(model.dims).edge_names()
    assert len(edges) == 8
    hand = HandBuilt(model, batch)
    table = {}
    for bits in itertools.product([False, True], repeat=len(edges)):
        s = dict(zip(edges, bits))
        table[frozenset(e for e in edges if s[e])] = hand.distance(s)
    return model, batch, table


@pytest.mark.parametrize("fraction", [0.003, 0.03])
def test_acdc_matches_brute_force(exhaustive, fraction: float) -> None:
    model, batch, table = exhaustive
    graph = Graph.from_dims(model.dims)
    edges = frozenset(graph.edge_names())
    assert table[edges] == pytest.approx(0.0, abs=1e-6)
    threshold = fraction * table[frozenset()]  # relative to the empty circuit's KL
    found = acdc(model, batch, threshold)
    got = frozenset((s, d) for s, d, _ in found.edges())
    assert got == replay_acdc(graph, table, threshold)
    assert found.meta["distance"] == pytest.approx(table[got], abs=1e-5)
    assert 0 < len(got) < len(edges), sorted(got)
