"""Time TopK SAE training steps: mechscope's sparse path against plain dense autograd.

d_in 576 (SmolLM2's residual), 16x expansion, k=32, batch 4096, one thread by default, random
activations (the step's cost does not depend on the values). Prints seconds per step and tokens
per second for both paths and their ratio, on ``--device`` (cpu, cuda, or auto: cuda when
available; steps are timed between ``torch.cuda.synchronize`` calls on a GPU). Usage:
``python benchmarks/bench_sae_step.py [--steps N] [--device cpu|cuda|auto]``.
"""

from __future__ import annotations

import argparse

import torch

from machine import add_device_option, device_label, pick_device, timed
from mechscope.sae import SAE, SAEConfig, TrainConfig
from mechscope.sae.checkpoint import TrainState
from mechscope.sae.train import train_step


def time_steps(
    sparse: bool, steps: int, shape: tuple[int, int, int, int], device: torch.device
) -> float:
    d_in, expansion, k, batch = shape
    sae = SAE(SAEConfig(arch="topk", d_in=d_in, d_sae=expansion * d_in, k=k, normalize_scale=1.0))
    sae.to(device)
    sae.sparse_training = sparse  # type: ignore[attr-defined]
    sae.train()
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    cfg = TrainConfig(steps=steps + 1, batch_size=batch)
    state = TrainState.new(sae.cfg.d_sae, device=device)
    g = torch.Generator().manual_seed(0)
    xs = [(torch.randn(batch, d_in, generator=g) / d_in**0.5).to(device) for _ in range(2)]
    train_step(sae, opt, xs[0], None, state, cfg, 0)  # warm-up (allocations, Adam state)

    def run() -> None:
        for i in range(steps):
            train_step(sae, opt, xs[i % 2], None, state, cfg, i + 1)

    return timed(run, device)[1] / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--expansion", type=int, default=16)
    parser.add_argument("--k", type=int, default=32)
    add_device_option(parser)
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    shape = (args.d_in, args.expansion, args.k, args.batch)
    sparse = time_steps(True, args.steps, shape, device)
    dense = time_steps(False, args.steps, shape, device)
    print(
        f"TopK d_in {args.d_in} x{args.expansion} k {args.k} batch {args.batch}, "
        f"{args.threads} thread(s), device {device_label(device)}"
    )
    for name, sec in (("sparse (mechscope)", sparse), ("dense autograd", dense)):
        print(
            f"{name:20s} {sec:7.3f} s/step  {1 / sec:6.2f} steps/s  {args.batch / sec:9.0f} tokens/s"
        )
    print(f"speed-up of the sparse path: {dense / sparse:.2f}x")


if __name__ == "__main__":
    main()
