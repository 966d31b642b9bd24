"""The feature database: build throughput and memory, and the web server under 32 clients.

``build``: ``mechscope features build`` on SmolLM2-135M-Instruct for all 1,536 MLP neurons of a
layer plus every latent of a 9,216-latent TopK SAE (k = 32) on the residual stream of the same
layer, together, over ``--tokens`` tokens of the built-in corpus; prints tokens/s (wall and per
process CPU second), the peak RSS of the build minus the RSS after loading the model (sampled every
20 ms), the database's size, and the RSS at every checkpoint (flat: memory does not grow with
tokens). The SAE is random (``SAE(cfg, seed=0)``): throughput does not depend on what it learned.

``load``: ``mechscope serve`` on a database in a subprocess on 127.0.0.1, then ``--clients`` (32)
concurrent clients, each sending ``--requests`` requests mixed over the JSON API and the pages
(sources, a random feature's JSON, a feature page, text and token search, a source overview, an
inference); prints errors and p50 / p95 latency per endpoint and overall.

``saedashboard``: the same windows, model and SAE (a random ReLU SAE of ``--latents`` latents on
``blocks.L.hook_resid_post``: SAELens's TopK SAE refuses SAEDashboard's decoder-norm folding)
through ``mechscope features build`` (in process) and SAEDashboard's ``SaeVisRunner`` for every
latent (``peers/saedashboard_run.py`` in the venv of ``peers/setup_saedashboard.sh``; model and
SAE loading excluded on both sides); prints wall and CPU seconds and the CPU ratio. Usage:

    OMP_NUM_THREADS=1 python benchmarks/bench_features.py build [--tokens 1000000] [--layer 15]
    OMP_NUM_THREADS=1 python benchmarks/bench_features.py load --db features.db
    OMP_NUM_THREADS=1 python benchmarks/bench_features.py saedashboard [--tokens 4096]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_neurons import Sampler, rss_mb
from machine import add_device_option, cpu_name, device_label, pick_device


def build(args: argparse.Namespace) -> None:
    import torch

    import mechscope
    from mechscope.features import build as build_module
    from mechscope.features.build import BuildConfig, build_features
    from mechscope.sae import SAE, SAEConfig, save_sae

    torch.set_num_threads(args.threads)
    model = mechscope.load("smollm2-135m", progress=False)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-features-"))
    sae_dir = work / "sae-9216"
    site = f"blocks.{args.layer}.hook_resid_post"
    cfg = SAEConfig(arch="topk", d_in=model.dims.d_model, d_sae=9216, k=32, hook_name=site)
    out = work / "features.db"
    # --resume: a killed run continues (the build resumes from its checkpoint); the CPU and wall
    # seconds of the earlier runs and their peak memory are carried in bench-runs.json
    runs_file = work / "bench-runs.json"
    earlier = json.loads(runs_file.read_text()) if args.resume and runs_file.exists() else []
    if not (args.resume and sae_dir.exists()):
        save_sae(SAE(cfg, seed=0), sae_dir)
    if not args.resume:
        for p in (out, out.with_name("features.db-wal"), out.with_name("features.db-shm")):
            p.unlink(missing_ok=True)
    config = BuildConfig(model="smollm2-135m", sources=(f"mlp:{args.layer}", f"sae:{sae_dir}"),
                         n_tokens=args.tokens, seq_len=64, batch_size=16)  # fmt: skip
    base = rss_mb()
    marks: list[tuple[int, float]] = []
    real_save = build_module._save

    def save_and_mark(db, states, resid, done):  # type: ignore[no-untyped-def]
        real_save(db, states, resid, done)
        marks.append((done["windows"] * 64, rss_mb() - base))
        this = {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall,
                "peak_mb": sampler.high - base, "tokens": marks[-1][0]}  # fmt: skip
        runs_file.write_text(json.dumps([*earlier, this]))

    build_module._save = save_and_mark
    sampler = Sampler()
    sampler.start()
    cpu, wall = time.process_time(), time.perf_counter()
    summary = build_features(model, config, str(out), checkpoint_seconds=args.checkpoint, quiet=True)  # fmt: skip
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sampler.stop.set()
    sampler.join()
    n = summary["tokens"]
    peak = max([sampler.high - base] + [r["peak_mb"] for r in earlier])
    wall += sum(r["wall"] for r in earlier)
    cpu += sum(r["cpu"] for r in earlier)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"sources: mlp:{args.layer} (1,536 neurons) + 9,216-latent TopK SAE at {site}")
    if earlier:
        print(
            f"resumed: {len(earlier)} earlier run(s) stopped at {[r['tokens'] for r in earlier]} tokens"
        )
    print(f"tokens: {n:,} in {wall:.1f} s wall, {cpu:.1f} s CPU ({args.threads} torch threads)")
    print(f"throughput: {n / wall:,.0f} tokens/s wall, {n / cpu:,.0f} tokens per CPU second")
    print(f"peak RSS of the build: {peak:,.0f} MB over the loaded model")
    print(f"database: {out.stat().st_size / 2**20:,.0f} MB at {out}")
    for tokens, mb in marks:
        print(f"  checkpoint at {tokens:>9,} tokens: RSS +{mb:,.0f} MB")


ENDPOINTS = ["sources", "feature", "feature_page", "search_text", "search_token", "source_page", "infer"]  # fmt: skip


async def client(http, base: str, n: int, n_features: dict[str, int], rng: random.Random, out: list) -> None:  # fmt: skip
    sources = list(n_features)
    for _ in range(n):
        kind = rng.choices(ENDPOINTS, weights=[2, 6, 4, 3, 3, 1, 1])[0]
        src = rng.choice(sources)
        i = rng.randrange(n_features[src])
        url, method, body = {
            "sources": ("/api/sources", "get", None),
            "feature": (f"/api/features/{src}/{i}", "get", None),
            "feature_page": (f"/feature/{src}/{i}", "get", None),
            "search_text": ("/api/search?q=the&mode=text&limit=20", "get", None),
            "search_token": ("/api/search?q=%20the&mode=token&limit=20", "get", None),
            "source_page": (f"/source/{src}", "get", None),
            "infer": (
                "/api/infer",
                "post",
                {"text": "The cat sat on the mat.", "source": src, "limit": 5},
            ),  # fmt: skip
        }[kind]
        start = time.perf_counter()
        try:
            r = await (http.post(base + url, json=body) if method == "post" else http.get(base + url))  # fmt: skip
            ok = r.status_code == 200
        except Exception:  # a refused or dropped connection counts as an error
            ok = False
        out.append((kind, time.perf_counter() - start, ok))


async def load_run(base: str, clients: int, requests: int, n_features: dict[str, int]) -> list:
    import httpx

    out: list = []
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await http.post(base + "/api/infer", json={"text": "warm up", "source": next(iter(n_features)), "limit": 1})  # fmt: skip
        rngs = [random.Random(seed) for seed in range(clients)]
        await asyncio.gather(*(client(http, base, requests, n_features, r, out) for r in rngs))
    return out


def load(args: argparse.Namespace) -> None:
    import httpx

    from mechscope.features import open_db

    with open_db(args.db, readonly=True) as db:
        n_features = {s["source"]: s["n_features"] for s in db.sources()}
    port = args.port
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "mechscope.cli.main", "serve", args.db, "--port", str(port), "-q"], env=env)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(base + "/api/sources", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        wall = time.perf_counter()
        out = asyncio.run(load_run(base, args.clients, args.requests, n_features))
        wall = time.perf_counter() - wall
    finally:
        server.terminate()
        server.wait(30)
    errors = sum(not ok for _, _, ok in out)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{args.clients} clients x {args.requests} requests = {len(out)} in {wall:.1f} s "
          f"({len(out) / wall:.1f} req/s); errors: {errors}")  # fmt: skip
    print("| endpoint | requests | p50 ms | p95 ms |\n|---|---|---|---|")
    for kind in [*ENDPOINTS, "all"]:
        times = sorted(t for k, t, _ in out if kind in (k, "all"))
        if times:
            q = statistics.quantiles(times, n=20) if len(times) > 1 else [times[0]] * 19
            print(f"| {kind} | {len(times)} | {1000 * statistics.median(times):.0f} | {1000 * q[18]:.0f} |")  # fmt: skip


def saedashboard(args: argparse.Namespace) -> None:
    """mechscope's build and SAEDashboard's ``SaeVisRunner`` on the same model, SAE and windows."""
    import numpy as np
    import torch

    import mechscope
    from mechscope.features.build import BuildConfig, _stream, build_features
    from mechscope.features.sources import capture_sites
    from mechscope.models.loading import load_hf
    from mechscope.sae import SAE, SAEConfig, save_sae

    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-saedashboard-"))
    hf, tokenizer, _ = load_hf("smollm2-135m", progress=False)
    hf.save_pretrained(work / "hf")
    tokenizer.save_pretrained(work / "hf")
    del hf
    model = mechscope.load("smollm2-135m", progress=False)
    site = f"blocks.{args.layer}.hook_resid_post"
    cfg = SAEConfig(arch="relu", d_in=model.dims.d_model, d_sae=args.latents, hook_name=site)
    sae_dir = work / "sae"
    save_sae(SAE(cfg, seed=0), sae_dir)
    config = BuildConfig(model="smollm2-135m", sources=(f"sae:{sae_dir}",), n_tokens=args.tokens,
                         seq_len=64, batch_size=16)  # fmt: skip
    np.save(work / "tokens.npy", torch.cat(list(_stream(model, config))).long().numpy())
    out = work / "features.db"
    wall, cpu = time.perf_counter(), time.process_time()
    build_features(model, config, out, quiet=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # the forwards alone (stopped after the site), as the build runs them
    forward = time.process_time()
    for tokens in _stream(model, config):
        capture_sites(model, [site], tokens)
    forward = time.process_time() - forward
    peer = [args.python, str(Path(__file__).parent / "peers" / "saedashboard_run.py"),
            str(work / "hf"), str(sae_dir), str(work / "tokens.npy"), site, str(args.latents)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(
        f"SmolLM2-135M, ReLU SAE ({args.latents} latents, random) at {site}, {args.tokens} tokens"
    )
    print(f"mechscope features build: {wall:.1f} s wall, {cpu:.1f} CPU-s")
    print(f"the model forwards alone (both tools run them, stopped after {site}): {forward:.1f} "
          f"CPU-s = {100 * forward / cpu:.0f}% of mechscope's")  # fmt: skip
    for mode in args.peer_modes.split(","):
        # default: SAEDashboard reruns the model for every 256 features; cached: its cache_dir
        extra = [str(work / f"sae-cache-{mode}")] if mode == "cached" else []
        line = subprocess.run(peer + extra, env=env, check=True, capture_output=True, text=True)
        theirs = json.loads(line.stdout.strip().splitlines()[-1])
        print(f"SAEDashboard SaeVisRunner, {mode} ({theirs['features']} features): "
              f"{theirs['wall']:.1f} s wall, {theirs['cpu']:.1f} CPU-s; ratio (SAEDashboard / "
              f"mechscope, CPU-s): {theirs['cpu'] / cpu:.2f}; if mechscope's work beside the "
              f"forwards were free: {theirs['cpu'] / forward:.2f}")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.1f}")


def cpu_only(name: str) -> str:
    """The device line; the build and the server run on the CPU only (SAE readouts and the
    server's model live there), so another device is a one-line error."""
    device = pick_device(name)
    if device.type != "cpu":
        raise SystemExit("error: bench_features runs on the CPU only; use --device cpu")
    return device_label(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("build")
    b.add_argument("--tokens", type=int, default=1_000_000)
    b.add_argument("--layer", type=int, default=15)
    b.add_argument("--checkpoint", type=float, default=120.0, help="seconds between checkpoints")
    b.add_argument("--work", default=None, help="folder for the SAE and the database")
    b.add_argument("--threads", type=int, default=1, help="torch threads")
    b.add_argument("--resume", action="store_true", help="continue a killed run in --work")
    ld = sub.add_parser("load")
    ld.add_argument("--db", required=True)
    ld.add_argument("--clients", type=int, default=32)
    ld.add_argument("--requests", type=int, default=20, help="per client")
    ld.add_argument("--port", type=int, default=8765)
    sd = sub.add_parser("saedashboard")
    sd.add_argument("--tokens", type=int, default=4096)
    sd.add_argument("--layer", type=int, default=15)
    sd.add_argument("--latents", type=int, default=512)
    sd.add_argument("--work", default=None, help="folder for the model copy, SAE and database")
    sd.add_argument("--python", default="/work/peers/saedashboard/bin/python", help="the peer venv")
    sd.add_argument("--peer-modes", default="default,cached",
                    help="SAEDashboard runs: default (model rerun per 256 features), cached (cache_dir)")  # fmt: skip
    for p in (b, ld, sd):
        add_device_option(p)
    args = parser.parse_args()
    print(f"device {cpu_only(args.device)}")
    {"build": build, "load": load, "saedashboard": saedashboard}[args.what](args)


if __name__ == "__main__":
    main()
