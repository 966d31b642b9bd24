"""Model comparison and diffing: what the streamed scores and the crosscoder trainer cost.

Three measurements (``--only`` picks some):

- ``similarity``: debiased linear CKA and Procrustes for ``--layers`` squared layer pairs (6 x 6) of
  width 576 on
  random activations, streamed (:class:`mechscope.compare.similarity.SimilarityStats`) against the
  textbook computation from the ``[N N]`` Gram matrices (``cka_direct``, ``procrustes_direct``) at
  growing ``N``: CPU seconds, the largest difference, and the peak memory each one needs (the
  streamed sums do not grow with ``N``; the Gram matrices grow as ``N^2``);
- ``crosscoder``: BatchTopK training steps of a crosscoder over two models of width ``d`` (input
  ``2d``) against an SAE of the same number of latents over one model (input ``d``), through the
  same trainer (:func:`mechscope.sae.train.train_step`): tokens per CPU second, and the ratio;
- ``models``: ``compare_models`` of the built-in model against ``--finetuned`` (a folder of
  ``mechscope toy finetune``; default: the model against itself) over ``--tokens`` tokens:
  aligned tokens per second.

    python benchmarks/bench_compare.py --tokens 5000 --finetuned /tmp/ft-planted
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from machine import add_device_option, device_label, machine, pick_device, timed
from mechscope.compare.similarity import SimilarityStats, cka_direct, procrustes_direct
from mechscope.diff.crosscoder import make_crosscoder
from mechscope.sae import SAE, SAEConfig, TrainConfig
from mechscope.sae.checkpoint import TrainState
from mechscope.sae.train import train_step


def _stream(x: torch.Tensor, y: torch.Tensor) -> tuple[object, SimilarityStats]:
    stats = SimilarityStats()
    for start in range(0, x.shape[0], 1024):
        stats.add(x[start : start + 1024], y[start : start + 1024])
    return stats.result(), stats


def _direct(x: torch.Tensor, y: torch.Tensor, pairs: list) -> list[tuple[float, float]]:
    return [(cka_direct(x[:, i], y[:, j]), procrustes_direct(x[:, i], y[:, j])) for i, j in pairs]


def similarity(sizes: list[int], layers: int, d: int) -> None:
    print(f"similarity: {layers} x {layers} layer pairs, width {d}")
    print("  N        streamed CPU-s  direct CPU-s  max |diff|  streamed state MB  Gram MB")
    gen = torch.Generator().manual_seed(0)
    pairs = [(0, 0), (1, 3)]  # the direct computation of every pair would take minutes
    for n in sizes:
        x = torch.randn(n, layers, d, generator=gen)
        y = x @ torch.randn(d, d, generator=gen) / d**0.5 + torch.randn(n, layers, d, generator=gen)
        (result, stats), _, cpu_s = timed(lambda x=x, y=y: _stream(x, y), "cpu")
        values, _, cpu_d = timed(lambda x=x, y=y: _direct(x, y, pairs), "cpu")
        diff = max(
            max(abs(result.cka[i][j] - c), abs(result.procrustes[i][j] - p))
            for (i, j), (c, p) in zip(pairs, values, strict=True)
        )
        state = sum(t.numel() for t in (stats.cross, stats.ay, stats.bx)) * 8 / 2**20
        gram = 2 * n * n * 8 / 2**20
        per_pair = cpu_d / len(pairs) * layers * layers
        print(
            f"  {n:<8d} {cpu_s:14.2f}  {per_pair:12.2f}  {diff:10.2e}  {state:17.0f}  {gram:7.0f}"
            "   (direct: 2 pairs timed, scaled to all)"
        )


def crosscoder(d: int, expansion: int, k: int, batch: int, steps: int) -> None:
    def run(sae: SAE, width: int) -> float:
        sae.train()
        opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
        cfg = TrainConfig(steps=steps + 1, batch_size=batch)
        state = TrainState.new(sae.cfg.d_sae)
        gen = torch.Generator().manual_seed(0)
        xs = [torch.randn(batch, width, generator=gen) / width**0.5 for _ in range(2)]
        train_step(sae, opt, xs[0], None, state, cfg, 0)
        start = time.process_time()
        for i in range(steps):
            train_step(sae, opt, xs[i % 2], None, state, cfg, i + 1)
        return batch * steps / (time.process_time() - start)

    d_sae = expansion * d
    cc = run(make_crosscoder("batchtopk", d, d_sae, k=k), 2 * d)
    sae = run(SAE(SAEConfig(arch="batchtopk", d_in=d, d_sae=d_sae, k=k)), d)
    same_in = run(SAE(SAEConfig(arch="batchtopk", d_in=2 * d, d_sae=d_sae, k=k)), 2 * d)
    print(f"crosscoder: BatchTopK, {d_sae} latents, k {k}, batch {batch}, {steps} steps")
    print(f"  crosscoder (2 x {d} in)   {cc:9.0f} token pairs / CPU-s")
    print(
        f"  SAE ({d} in)              {sae:9.0f} tokens / CPU-s   crosscoder / SAE = {cc / sae:.2f}"
    )
    print(
        f"  SAE ({2 * d} in)             {same_in:9.0f} tokens / CPU-s   crosscoder / SAE = {cc / same_in:.2f}"
    )


def models(tokens: int, finetuned: str | None) -> None:
    import mechscope
    from mechscope.compare.run import compare_models

    a = mechscope.load("smollm2-135m", progress=False)
    b = mechscope.load(finetuned, progress=False) if finetuned else a
    result, wall, cpu = timed(
        lambda: compare_models(a, b, None, n_tokens=tokens, quiet=True), "cpu"
    )
    diag = [result.cka[i][i] for i in range(len(result.layers_a))]
    print(
        f"models: smollm2-135m vs {finetuned or 'itself'}, {result.n_tokens} tokens, 12 x 12 layers"
    )
    print(f"  {wall:.0f} s wall, {cpu:.0f} s CPU: {result.n_tokens / cpu:.0f} tokens per CPU-s")
    print(f"  diagonal CKA {', '.join(f'{v:.3f}' for v in diag)}")
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="similarity,crosscoder,models")
    parser.add_argument("--sizes", default="2048,8192")
    parser.add_argument("--tokens", type=int, default=5000)
    parser.add_argument("--finetuned", default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--layers", type=int, default=6, help="Layers per model (similarity).")
    parser.add_argument("--threads", type=int, default=1)
    add_device_option(parser)
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type != "cpu":
        raise SystemExit("error: bench_compare measures CPU time; run it with --device cpu")
    torch.set_num_threads(args.threads)
    print(f"device {device_label(device)}; {machine(device)}")
    only = set(args.only.split(","))
    if "similarity" in only:
        similarity([int(s) for s in args.sizes.split(",")], args.layers, 576)
    if "crosscoder" in only:
        crosscoder(576, 8, 32, 4096, args.steps)
    if "models" in only:
        models(args.tokens, args.finetuned)


if __name__ == "__main__":
    main()
