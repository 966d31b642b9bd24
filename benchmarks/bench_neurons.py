"""Memory and speed of the neuron pass: every MLP neuron of one SmolLM2 layer over corpus tokens.

Runs :func:`mechscope.neurons.scan` over the built-in corpus, printing after each checkpoint the
tokens scanned, tokens/s and the process's resident memory (current RSS from /proc, and the
highest RSS sampled every 20 ms by a thread) minus the RSS measured after loading the model and
before the pass. Flat RSS
growth across checkpoints shows memory does not grow with tokens. Usage:

    OMP_NUM_THREADS=1 python benchmarks/bench_neurons.py [--tokens 200000] [--layer 15]

``--compare`` instead times, on the same batches and interleaved (so a shared machine's load hits
all alike), a full forward (logits) against the neuron pass stopped at layers 2, 15 and 29, in
process CPU seconds per 1,000 tokens and wall tokens/s. The model runs on ``--device`` (auto: cuda
when available); timings are synchronised with the GPU, and the output names the device.
"""

from __future__ import annotations

import argparse
import resource
import threading
import time

import torch

import mechscope
from machine import add_device_option, device_label, pick_device, sync
from mechscope.corpus import batches, load_corpus
from mechscope.neurons import mlp_neurons, scan


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Sampler(threading.Thread):
    """The largest RSS seen, sampled every 20 ms during the pass (peak RSS of the pass alone)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.high, self.stop = rss_mb(), threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.high = max(self.high, rss_mb())


def compare(model, corpus, args) -> None:
    from mechscope.neurons import capture_site
    from mechscope.neurons.histogram import empty_histogram, update_histogram
    from mechscope.neurons.topk import empty_topk, update_topk

    stream = list(batches(corpus, model.tokenizer, batch_size=args.batch_size,
                          seq_len=args.seq_len, n_tokens=args.tokens))  # fmt: skip
    readouts = {f"scan layer {i}": mlp_neurons(model, i) for i in (2, 15, 29)}
    cpu = dict.fromkeys(["full forward", *readouts], 0.0)
    wall = dict.fromkeys(cpu, 0.0)
    for tokens in stream:
        for name in cpu:
            sync(args.device)
            c0, w0 = time.process_time(), time.perf_counter()
            if name == "full forward":
                with torch.no_grad():
                    model(tokens)
                sync(args.device)
            else:  # as scan() does: the site's activations come back to the CPU
                r = readouts[name]
                acts = r.read(capture_site(model, r.site, tokens)).float().cpu()
                update_topk(empty_topk(r.n_units, args.k, args.seq_len), acts, tokens, 0)
                update_histogram(empty_histogram(r.n_units), acts.reshape(-1, r.n_units))
            cpu[name] += time.process_time() - c0
            wall[name] += time.perf_counter() - w0
    n = sum(t.numel() for t in stream)
    for name in cpu:
        print(f"{name:>14s}: {1000 * cpu[name] / n:6.2f} CPU-s per 1k tokens, "
              f"{n / wall[name]:6.0f} tok/s wall ({n} tokens, {device_label(args.device)})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compare", action="store_true", help="full forward vs early stop")
    add_device_option(parser)
    args = parser.parse_args()
    args.device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    model = mechscope.load("smollm2-135m", device=args.device, progress=False)
    corpus = load_corpus()
    readout = mlp_neurons(model, args.layer)
    if args.compare:
        compare(model, corpus, args)
        return
    with torch.no_grad():  # warm up once so allocator pools exist before the baseline
        model(torch.zeros((args.batch_size, args.seq_len), dtype=torch.long))
    base, base_peak = rss_mb(), peak_mb()
    print(f"model loaded: RSS {base:.0f} MB, peak {base_peak:.0f} MB; layer {args.layer}, "
          f"k={args.k}, seq_len={args.seq_len}, batch={args.batch_size}, "
          f"threads={args.threads}, device {device_label(args.device)}")  # fmt: skip
    checkpoints = sorted({c for c in (50_000, 100_000, 200_000, 500_000) if c < args.tokens})
    checkpoints.append(args.tokens)
    sampler = Sampler()
    sampler.start()
    seen, start = 0, time.perf_counter()
    stream = batches(corpus, model.tokenizer, batch_size=args.batch_size, seq_len=args.seq_len,
                     n_tokens=args.tokens)  # fmt: skip

    def counted():
        nonlocal seen
        for b in stream:
            yield b
            seen += b.numel()
            if checkpoints and seen >= checkpoints[0]:
                checkpoints.pop(0)
                rate = seen / (time.perf_counter() - start)
                print(f"{seen:>8d} tokens  {rate:6.0f} tok/s  RSS +{rss_mb() - base:6.1f} MB  "
                      f"sampled peak +{sampler.high - base:6.1f} MB", flush=True)  # fmt: skip

    result = scan(model, readout, counted(), k=args.k)
    elapsed = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    print(
        f"done: {result.n_tokens} tokens in {elapsed:.0f} s ({result.n_tokens / elapsed:.0f} "
        f"tok/s); RSS peak during the pass +{sampler.high - base:.1f} MB over the loaded "
        f"model (getrusage peak {peak_mb():.0f} MB, of which loading {base_peak:.0f} MB)"
    )


if __name__ == "__main__":
    main()
