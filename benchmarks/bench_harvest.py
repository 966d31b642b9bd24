"""Harvest memory and SAE training throughput against SAELens, on SmolLM2-135M activations.

Two parts (both single-threaded, ``torch.set_num_threads(1)``):

``memory``: harvest ``--tokens`` rows of ``blocks.6.hook_resid_post`` from the built-in corpus into
``--out`` while a thread samples the process's resident set size (VmRSS, and the peak VmHWM) and
the manifest's token count. Prints the RSS after loading the model and after one forward batch (the
model's own footprint), then the peak RSS when the harvest passes each of ``--checkpoints``. The
goal of issue 5 is peak RSS within 2 GB of the model's footprint for 10M tokens; only the current
shard buffer grows with the harvest, so the figure must be flat in the token count.

``sae``: train a TopK SAE (d_in 576, 16x = 9216 latents, k 32, batch 4096) on the store in ``--acts``
with mechscope's ``fit`` and with SAELens's trainer (``benchmarks/peers/run_saelens_topk.py`` in its
own venv, given with ``--peer-python``) on the same rows in the same order, for ``--tokens`` tokens;
print tokens/s (wall and CPU), the ratio and the final FVU of both on held-out rows.

Both parts take ``--device cpu|cuda|auto`` (auto: cuda when available): the model (``memory``) or
both trainers (``sae``: mechscope here, SAELens in its runner) run there; training is timed between
``torch.cuda.synchronize`` calls on a GPU, and the output names the device.

    python benchmarks/bench_harvest.py memory --tokens 1000000 --out /tmp/acts-l6
    python benchmarks/bench_harvest.py sae --acts /tmp/acts-l6 --tokens 409600 \\
        --peer-python /work/peers/venv-saelens/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from machine import add_device_option, device_label, pick_device, timed  # noqa: E402

torch.set_num_threads(1)

SITE = "blocks.6.hook_resid_post"
PEER = Path(__file__).parent / "peers" / "run_saelens_topk.py"


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc/self/status."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def sample(out: Path, samples: list, stop: threading.Event) -> None:
    while not stop.wait(0.25):
        try:
            tokens = json.loads((out / "manifest.json").read_text())["n_tokens"]
        except (OSError, ValueError, KeyError):
            tokens = 0
        samples.append((time.perf_counter(), tokens, *rss_mb()))


def memory(args: argparse.Namespace) -> None:
    import mechscope
    from mechscope.activations import harvest
    from mechscope.corpus import batches, load_corpus

    print(f"start: RSS {rss_mb()[0]:.0f} MiB; device {device_label(args.device)}")
    model = mechscope.load("smollm2-135m", device=args.device, progress=False)
    corpus = load_corpus(None)
    params = sum(p.numel() * p.element_size() for p in model.hf.parameters()) / 2**20
    loaded = rss_mb()[0]
    first = next(batches(corpus, model.tokenizer, batch_size=8, seq_len=128))
    with torch.inference_mode():
        model(first)  # the full forward of one batch: the model's own working set
    footprint = rss_mb()[1]
    print(f"model parameters {params:.0f} MiB; RSS after load {loaded:.0f} MiB; "
          f"peak RSS after one full forward of 8x128 tokens {footprint:.0f} MiB")  # fmt: skip
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: from here it is the harvest's peak
    print(f"peak RSS reset to {rss_mb()[1]:.0f} MiB before the harvest")
    samples: list = []
    stop = threading.Event()
    thread = threading.Thread(target=sample, args=(Path(args.out), samples, stop), daemon=True)
    thread.start()
    start = time.perf_counter()
    store = harvest(model, SITE, corpus, args.tokens, args.out, dtype=args.dtype, progress=True)
    seconds = time.perf_counter() - start
    stop.set()
    thread.join()
    samples.append((time.perf_counter(), store.n_tokens, *rss_mb()))
    shard_mb = store.manifest.shards[0].bytes / 2**20
    print(f"harvested {store.n_tokens} tokens in {seconds:.0f} s ({store.n_tokens / seconds:.0f} "
          f"tokens/s, one thread), {len(store.manifest.shards)} shards of {shard_mb:.0f} MiB")  # fmt: skip
    for checkpoint in args.checkpoints:
        hit = next((s for s in samples if s[1] >= checkpoint), None)
        if hit is None:
            continue
        print(f"  at {checkpoint:>9,} tokens: RSS {hit[2]:.0f} MiB, peak {hit[3]:.0f} MiB, "
              f"peak - model footprint {hit[3] - footprint:.0f} MiB")  # fmt: skip
    peak, top = max(s[3] for s in samples), max(s[2] for s in samples)
    print(f"peak RSS over the harvest {peak:.0f} MiB (largest sampled RSS {top:.0f} MiB) = model "
          f"footprint {peak - footprint:+.0f} MiB")  # fmt: skip


def sae(args: argparse.Namespace) -> None:
    from mechscope.activations import ActivationStore
    from mechscope.sae import SAE, SAEConfig, TrainConfig, fit

    store = ActivationStore.open(args.acts)
    steps = args.tokens // args.batch_size
    held_out = store.manifest.shards[-1]  # the last shard is never trained on
    rows = store.load_shard(len(store.manifest.shards) - 1)[store.sites[0]].float()
    rows = rows.to(args.device)
    peer = subprocess.Popen(  # SAELens first, then mechscope in this process (not at once)
        [args.peer_python, str(PEER), "--acts", args.acts, "--steps", str(steps),
         "--batch-size", str(args.batch_size), "--k", str(args.k), "--expansion", str(args.expansion),
         "--lr", str(args.lr), "--device", args.device.type],
        stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    out, _ = peer.communicate()
    if peer.returncode != 0:
        raise SystemExit(f"SAELens runner failed ({peer.returncode})")
    theirs = json.loads(out.decode().strip().splitlines()[-1])
    if theirs.get("device", "cpu") != args.device.type:
        raise SystemExit(f"the SAELens runner ran on {theirs.get('device')}, not {args.device}")

    cfg = SAEConfig(arch="topk", d_in=store.manifest.d_in, d_sae=args.expansion * store.manifest.d_in,
                    k=args.k, hook_name=SITE, normalize_scale=store.norm_scale)  # fmt: skip
    model = SAE(cfg).to(args.device)
    train = TrainConfig(steps=steps, batch_size=args.batch_size, lr=args.lr, decay="none")
    stream = (x.to(args.device) for x in training_rows(store, args.batch_size, held_out.index))
    _, wall, cpu = timed(lambda: fit(model, stream, train, progress=False), args.device)
    with torch.no_grad():
        x_hat = model(rows).x_hat
    ours = {"wall_s": wall, "cpu_s": cpu, "fvu": fvu(rows, x_hat), "steps": steps}
    args.d_in = store.manifest.d_in
    report(ours, theirs, args)


def training_rows(store, batch_size: int, held_out: int):
    """Batches in store order (shards other than the held-out one): what the peer reads too."""
    for i, shard in enumerate(store.manifest.shards):
        if shard.index == held_out:
            continue
        x = store.load_shard(i)[store.sites[0]].float()
        for b in range(0, x.shape[0] - batch_size + 1, batch_size):
            yield x[b : b + batch_size]


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def report(ours: dict, theirs: dict, args: argparse.Namespace) -> None:
    tokens = ours["steps"] * args.batch_size
    print(f"TopK SAE d_in {args.d_in} x{args.expansion} k={args.k}, batch {args.batch_size}, "
          f"{ours['steps']} steps ({tokens} tokens), one thread, device "
          f"{device_label(args.device)}")  # fmt: skip
    for name, r in (("mechscope", ours), ("SAELens", theirs)):
        print(f"  {name:9s}: {tokens / r['wall_s']:8.0f} tokens/s wall, {tokens / r['cpu_s']:8.0f} "
              f"tokens/s CPU, final FVU {r['fvu']:.4f} (held-out shard)")  # fmt: skip
    print(f"  ratio mechscope / SAELens: {theirs['wall_s'] / ours['wall_s']:.2f}x wall, "
          f"{theirs['cpu_s'] / ours['cpu_s']:.2f}x CPU")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    mem = sub.add_parser("memory")
    mem.add_argument("--tokens", type=int, default=1_000_000)
    mem.add_argument("--out", required=True)
    mem.add_argument("--dtype", default="float32")
    mem.add_argument("--checkpoints", type=lambda s: [int(float(x)) for x in s.split(",")],
                     default=[100_000, 500_000, 1_000_000, 2_000_000, 10_000_000])  # fmt: skip
    s = sub.add_parser("sae")
    s.add_argument("--acts", required=True)
    s.add_argument("--tokens", type=int, default=409_600)
    s.add_argument("--batch-size", type=int, default=4096)
    s.add_argument("--k", type=int, default=32)
    s.add_argument("--expansion", type=int, default=16)
    s.add_argument("--lr", type=float, default=4e-4)
    s.add_argument("--peer-python", default="/work/peers/venv-saelens/bin/python")
    for part in (mem, s):
        add_device_option(part)
    args = parser.parse_args()
    args.device = pick_device(args.device)
    memory(args) if args.part == "memory" else sae(args)


if __name__ == "__main__":
    main()
