"""MoE routing statistics: mechscope's hooks against transformers' own ``output_router_logits``.

On a random Mixtral (``--d-model``, ``--layers``, ``--experts``, top ``--top-k``), over
``--windows`` windows of ``--seq-len`` random tokens, in batches of ``--batch``:

- mechscope: ``collect_routing`` (hooks on ``mlp.hook_router_logits`` and ``hook_expert_indices``)
  then load, co-activation and entropy per layer;
- peer: the model called with ``output_router_logits=True``, top-k of the returned logits, the same
  statistics with plain torch (the test oracle's computation).

Prints both times (wall and CPU), their ratio, and whether the counts agree; then the cost of the
causal check (ablate and reroute every expert) in full forwards.

    python benchmarks/bench_moe.py --windows 64 --seq-len 128
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from machine import add_device_option, machine, pick_device, timed  # noqa: E402

torch.set_num_threads(1)


def build(args: argparse.Namespace, device: torch.device):
    from transformers import MixtralConfig, MixtralForCausalLM

    from mechscope import HookedModel

    torch.manual_seed(0)
    cfg = MixtralConfig(vocab_size=2000, hidden_size=args.d_model, intermediate_size=2 * args.d_model,
                        num_hidden_layers=args.layers, num_attention_heads=8, num_key_value_heads=4,
                        max_position_embeddings=max(256, args.seq_len),
                        num_local_experts=args.experts, num_experts_per_tok=args.top_k)  # fmt: skip
    return HookedModel(MixtralForCausalLM(cfg).to(device).eval())


def ours(model, tokens: torch.Tensor, batch: int) -> list[dict]:
    from mechscope.moe import coactivation, collect_routing, entropy, load

    r = collect_routing(model, tokens, batch)
    n = r.n_experts
    return [{"load": load(r.indices[L], n), "co": coactivation(r.indices[L], n),
             "h": entropy(r.logits[L])["entropy"]} for L in range(r.n_layers)]  # fmt: skip


@torch.no_grad()
def peer(model, tokens: torch.Tensor, batch: int, k: int) -> list[dict]:
    per_layer: list[list[torch.Tensor]] = [[] for _ in range(model.dims.n_layers)]
    device = next(model.hf.parameters()).device
    for start in range(0, tokens.shape[0], batch):
        out = model.hf(tokens[start : start + batch].to(device), output_router_logits=True)
        for L, logits in enumerate(out.router_logits):
            per_layer[L].append(logits.float().cpu())
    stats = []
    for chunks in per_layer:
        logits = torch.cat(chunks)
        chosen = torch.zeros_like(logits).scatter_(1, logits.topk(k, -1).indices, 1.0).double()
        p = torch.softmax(logits.double(), -1)
        stats.append({"load": chosen.sum(0).long(), "co": (chosen.T @ chosen).round().long(),
                      "h": float(-(p * p.log()).sum(-1).mean())})  # fmt: skip
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    add_device_option(parser)
    args = parser.parse_args()
    device = pick_device(args.device)
    model = build(args, device)
    tokens = torch.randint(
        0, 2000, (args.windows, args.seq_len), generator=torch.Generator().manual_seed(1)
    )
    peer(model, tokens[: args.batch], args.batch, args.top_k)  # warm-up
    a, wall_a, cpu_a = timed(lambda: ours(model, tokens, args.batch), device)
    b, wall_b, cpu_b = timed(lambda: peer(model, tokens, args.batch, args.top_k), device)
    same = all(torch.equal(x["load"], y["load"]) and torch.equal(x["co"], y["co"])
               and abs(x["h"] - y["h"]) < 1e-6 for x, y in zip(a, b, strict=True))  # fmt: skip
    print(" · ".join(f"{k} {v}" for k, v in machine(device).items()))
    print(f"random Mixtral d_model {args.d_model}, {args.layers} layers, {args.experts} experts, "
          f"top {args.top_k}; {tokens.numel():,} tokens")  # fmt: skip
    print(f"mechscope hooks: {wall_a:.2f} s wall, {cpu_a:.2f} s CPU")
    print(f"transformers output_router_logits: {wall_b:.2f} s wall, {cpu_b:.2f} s CPU")
    print(f"ratio mechscope / transformers: {wall_a / wall_b:.2f} wall, {cpu_a / cpu_b:.2f} CPU")
    print(f"load, co-activation and entropy identical: {same}")
    forwards = 1 + 2 * args.layers * args.experts
    print(f"causal check (ablate + reroute every expert): {forwards} forwards of its windows, "
          f"about {forwards * wall_b / tokens.shape[0]:.2f} s per window at this size")  # fmt: skip


if __name__ == "__main__":
    main()
