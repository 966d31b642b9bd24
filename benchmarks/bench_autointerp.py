"""Explanations and scores on planted features and on the built-in model, and their throughput.

``planted``: the five planted features of ``mechscope.autointerp.planted`` (seeds 0 and 1): every
scorer's mean score for the true explanation, the ``tokens`` explainer's and (``--llm``) the
built-in SmolLM2-135M-Instruct's, each beside its shuffled control (another feature's
explanation). Judges: ``lexical`` (no model) and, with ``--llm``, SmolLM2 in-process.

``builtin``: every feature of one source of a feature database built on SmolLM2 (``--db``, or
``--planted N`` planted corpora): ``tokens`` explanations scored by embedding and lexical
detection with the shuffled control, a histogram of both (``--png``); then ``--llm-features``
features explained and detection-scored through llama.cpp's ``llama-server`` on 127.0.0.1 serving
the built-in GGUF file (``--llama-server BIN``; ``--backends local``: SmolLM2 in-process), by
mechscope without and with the shuffled control (``--control``; ``--per-call`` windows per judge
call) and, with ``--delphi-python``, by delphi on the same windows (its ``DefaultExplainer`` and
``DetectionScorer``, 5 windows per call). Every part gets a fresh server with the same flags, 2
calls in flight; each prints features per minute, the CPU seconds of the server and of the client
(delphi's: its work, not its imports), the load average, and the server's token counts. mechscope
also scores delphi's explanations, and the two tools' detection scores are compared per feature.

    python benchmarks/bench_autointerp.py planted --llm
    python benchmarks/bench_autointerp.py builtin --db smol.db --png docs/autointerp_hist.png
    python benchmarks/bench_autointerp.py builtin --planted 2 --llm-only --llm-features 10 \\
        --n-score 5 --llama-server /work/peers/llamacpp/build/bin/llama-server \\
        --delphi-python /work/peers/delphi/venv/bin/python
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from machine import add_device_option, machine, pick_device  # noqa: E402
from mechscope.autointerp import SCORERS, LexicalJudge, LLMJudge, ScoreContext, split  # noqa: E402
from mechscope.autointerp.explain_tokens import explain_tokens  # noqa: E402
from mechscope.autointerp.explainers import LLMExplainer  # noqa: E402
from mechscope.autointerp.planted import planted_examples, planted_windows  # noqa: E402

torch.set_num_threads(1)


def _scores(features, texts, scorer, ctx, n_score):
    out = []
    for f, t in zip(features, texts, strict=True):
        s = SCORERS[scorer](t, split(f, n_score=n_score), ctx)
        out.append(np.nan if s.error else s.value)
    return out


def planted(args: argparse.Namespace) -> None:
    judges = {"lexical": LexicalJudge()}
    backend = None
    if args.llm:
        from mechscope.autointerp.local import LocalBackend

        backend = LocalBackend("smollm2-135m", batch_size=8, device=args.device)
        judges["smollm2"] = LLMJudge(backend, max_tokens=24)
    table = defaultdict(lambda: ([], []))
    for seed in range(args.seeds):
        feats = planted_examples(planted_windows(seed=seed), seed=seed)
        explanations = {
            "truth": [f.meta["truth"] for f in feats],
            "tokens": [explain_tokens(split(f).explain) for f in feats],
        }
        if backend is not None:
            replies = LLMExplainer(backend).explain([split(f).explain for f in feats])
            explanations["smollm2"] = [r.text or "" for r in replies]
            print(f"seed {seed} smollm2 explanations:", [r.text for r in replies])
        for name, texts in explanations.items():
            shuffled = texts[2:] + texts[:2]
            for judge_name, judge in judges.items():
                ctx = ScoreContext(judge, seed=seed)
                scorers = ["detection", "fuzzing", "simulation", "embedding"]
                if judge_name != "lexical":
                    scorers = [s for s in args.llm_scorers.split(",") if s != "embedding"]
                for scorer in scorers:
                    key = (name, scorer, "MiniLM" if scorer == "embedding" else judge_name)
                    table[key][0].extend(_scores(feats, texts, scorer, ctx, args.n_score))
                    table[key][1].extend(_scores(feats, shuffled, scorer, ctx, args.n_score))
    print("\n| explanation | scorer | judge | true | shuffled control |")
    print("|---|---|---|---|---|")
    for (name, scorer, judge), (true, ctrl) in table.items():
        print(f"| {name} | {scorer} | {judge} | {np.nanmean(true):.3f} | {np.nanmean(ctrl):.3f} |")


def _server(args: argparse.Namespace, label: str = "server") -> tuple[subprocess.Popen, str]:
    """llama.cpp's server on the built-in GGUF file, or the HF stand-in, on a free port; its log
    goes to WORK/server-LABEL.log."""
    import sys

    import httpx

    from mechscope.models.loading import _builtin_gguf

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    if args.llama_server:  # two slots of 4096 tokens: the two calls in flight run together
        cmd = [args.llama_server, "-m", str(_builtin_gguf()), "--alias", "smollm2", "--host",
               "127.0.0.1", "--port", str(port), "-c", "8192", "-np", "2", "-t", "1", "--metrics"]  # fmt: skip
    else:
        server = Path(__file__).parent / "peers" / "hf_chat_server.py"
        cmd = [sys.executable, str(server), "--port", str(port)]
    log = Path(args.work) / f"server-{label.split(' ')[0]}-{label.count('with')}.log"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(600):
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("llama.cpp server did not start")


def _histogram(png: Path, values: dict[str, tuple[list[float], list[float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(values), figsize=(5 * len(values), 3.4))
    for ax, (name, (true, ctrl)) in zip(np.atleast_1d(axes), values.items(), strict=True):
        bins = np.linspace(0, 1, 21)
        ax.hist(ctrl, bins=bins, alpha=0.6, label=f"shuffled control (mean {np.mean(ctrl):.2f})")
        ax.hist(true, bins=bins, alpha=0.6, label=f"own explanation (mean {np.mean(true):.2f})")
        ax.set_xlabel(f"{name} AUROC")
        ax.set_ylabel("features")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def builtin(args: argparse.Namespace) -> None:
    import shutil

    from mechscope.autointerp.explainers import TokensExplainer
    from mechscope.autointerp.run import explain_features, results, score_features
    from mechscope.features.db import open_db

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    db_path = work / "bench.db"
    if args.planted:  # planted corpora 0..N-1, their features numbered on in one source
        import dataclasses

        from mechscope.autointerp.planted import write_planted_db

        db_path.unlink(missing_ok=True)
        feats = [f for s in range(args.planted) for f in planted_examples(planted_windows(seed=s), seed=s)]  # fmt: skip
        write_planted_db(str(db_path), [dataclasses.replace(f, index=i) for i, f in enumerate(feats)])  # fmt: skip
    else:
        shutil.copy(args.db, db_path)
    with open_db(str(db_path)) as db:
        src = db.sources()[0]
        name, n = src["source"], src["n_features"]
        if args.llm_only:  # features spread over the source that have negative examples
            step = max(1, n // max(1, args.llm_features))
            live = [i for i in range(0, n, step) if db.examples(name, i, "negative")]
            live = live[: args.llm_features]
    if args.llm_only:
        _llm_throughput(args, db_path, name, live)
        return
    with open_db(str(db_path)) as db:
        t0 = time.perf_counter()
        s = explain_features(db, name, range(n), TokensExplainer(), quiet=True)
        t1 = time.perf_counter()
        print(f"{name}: {n} features, tokens explainer: {s.to_dict()} in {t1 - t0:.1f} s")
        ctx = ScoreContext(LexicalJudge())
        s = score_features(db, name, range(n), ["detection", "embedding"], ctx, quiet=True)
        t2 = time.perf_counter()
        print(f"lexical detection + embedding with control: {s.done} features in {t2 - t1:.1f} s"
              f" ({s.errors} errors)")  # fmt: skip
        rows = results(db, name, range(n), "tokens")
        hist = {}
        for scorer in ("detection", "embedding"):
            true = [r["scores"][scorer] for r in rows if scorer in r["control"]]
            ctrl = [r["control"][scorer] for r in rows if scorer in r["control"]]
            hist[scorer] = (true, ctrl)
            print(f"{scorer}: own {np.mean(true):.3f} (median {np.median(true):.3f}), control "
                  f"{np.mean(ctrl):.3f} over {len(true)} features")  # fmt: skip
        if args.png:
            _histogram(Path(args.png), hist)
        live = [r["index"] for r in rows if "detection" in r["control"]][: args.llm_features]
    if args.llm_features:
        _llm_throughput(args, db_path, name, live)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _metrics(url: str) -> dict[str, float]:
    """llama-server's token counters (``--metrics``): prompt tokens processed and cached,
    tokens generated; empty for a server without them."""
    import httpx

    try:
        text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("llamacpp:") and value:
            out[name.removeprefix("llamacpp:")] = float(value)
    return out


def _snapshot(proc: subprocess.Popen | None, url: str | None) -> dict[str, float]:
    import resource

    snap = {"wall": time.perf_counter(), "client": time.process_time(),
            "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
            + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime,
            "load": os.getloadavg()[0]}  # fmt: skip
    if proc is not None:
        snap["server"] = _cpu_seconds(proc.pid)
        snap |= _metrics(url) if url else {}
    return snap


def _report(label: str, n: int, a: dict, b: dict, client_cpu: float) -> dict[str, float]:
    """One line per part: rate, CPU seconds of the server and of the client, load, tokens."""
    wall = b["wall"] - a["wall"]
    row = {"features": n, "wall": wall, "per_min": 60 * n / wall, "client_cpu": client_cpu,
           "server_cpu": b.get("server", 0.0) - a.get("server", 0.0),
           "load": (a["load"], b["load"])}  # fmt: skip
    tokens = ""
    if "prompt_tokens_total" in b:
        d = {k: b[k] - a.get(k, 0.0) for k in ("prompt_tokens_total", "prompt_tokens_cached_total", "tokens_predicted_total")}  # fmt: skip
        tokens = (f"; prompt tokens processed {d['prompt_tokens_total']:.0f} (cached "
                  f"{d['prompt_tokens_cached_total']:.0f}), generated {d['tokens_predicted_total']:.0f}")  # fmt: skip
    cpu = row["server_cpu"] + client_cpu
    print(f"{label}: {n} features explained + detection-scored in {wall:.1f} s = "
          f"{row['per_min']:.2f} features/min; CPU s: server {row['server_cpu']:.1f}, client "
          f"{client_cpu:.1f} ({60 * n / cpu:.2f} features per CPU-minute); load average "
          f"{a['load']:.1f} -> {b['load']:.1f}{tokens}", flush=True)  # fmt: skip
    return row


def _llm_throughput(args: argparse.Namespace, db_path: Path, name: str, live: list[int]) -> None:
    """Each part on a fresh server (same binary and flags: no part inherits another's prompt
    cache): mechscope without and with the shuffled control, then delphi."""
    import shutil

    from mechscope.autointerp.backend import make_backend
    from mechscope.autointerp.run import explain_features, results, score_features
    from mechscope.features.db import open_db

    rows = {}
    parts = [c for c in args.control.split(",") if c]
    if args.delphi_python and args.delphi_first:  # the other order: load drifts during a run
        rows["delphi"] = _delphi(args, db_path, name, live)
    for control in parts:
        label = f"mechscope ({'with' if control == 'with' else 'no'} control, {args.per_call} per call)"  # fmt: skip
        part_db = db_path.with_name(f"{control}_control.db")
        shutil.copy(db_path, part_db)
        proc, url = (None, None) if args.backends == "local" else _server(args, label)
        try:
            spec = "local" if proc is None else f"openai:{url}"
            backend = make_backend(spec, model=None if proc is None else "smollm2", concurrency=2,
                                   timeout=900, device=args.device)  # fmt: skip
            judge = LLMJudge(backend, per_call=args.per_call)
            with open_db(str(part_db)) as db:
                a = _snapshot(proc, url)
                explain_features(db, name, live, LLMExplainer(backend), quiet=True)
                mid = _snapshot(proc, url)
                s = score_features(db, name, live, ["detection"], ScoreContext(judge),
                                   explainer=backend.name, control=control == "with",
                                   n_score=args.n_score, quiet=True)  # fmt: skip
                b = _snapshot(proc, url)
                out = results(db, name, live, backend.name)
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()
        row = _report(label, len(live), a, b, b["client"] - a["client"])
        print(f"  of which explaining: {mid['wall'] - a['wall']:.1f} s, server CPU "
              f"{mid.get('server', 0.0) - a.get('server', 0.0):.1f} s; scoring: "
              f"{b['wall'] - mid['wall']:.1f} s, server CPU {b.get('server', 0.0) - mid.get('server', 0.0):.1f} s")  # fmt: skip
        det = [r["scores"]["detection"] for r in out if "detection" in r["scores"]]
        ctl = [r["control"]["detection"] for r in out if "detection" in r["control"]]
        print(f"  errors {s.errors} {s.reasons[:2]}; detection AUROC {_mean(det)} over {len(det)} "
              f"features (control {_mean(ctl)}); balanced accuracy {_mean(_ba(part_db, name, live, backend.name))}")  # fmt: skip
        print(f"  explanations: {[r['explanation'] for r in out]}")
        rows[control] = row
    if args.delphi_python and not args.delphi_first:
        rows["delphi"] = _delphi(args, db_path, name, live)
    for control in parts:
        if "delphi" in rows:
            m, d = rows[control], rows["delphi"]
            print(f"ratio mechscope ({control} control) / delphi: {m['per_min'] / d['per_min']:.2f}x "
                  f"features per minute; {(d['server_cpu'] + d['client_cpu']) / (m['server_cpu'] + m['client_cpu']):.2f}x"
                  f" per CPU second (server + client); {d['server_cpu'] / m['server_cpu']:.2f}x per server CPU second")  # fmt: skip


def _mean(values: list) -> str:
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.3f}" if values else "n/a"


def _ba(db_path: Path, name: str, live: list[int], explainer: str) -> list[float]:
    """The detection balanced accuracy stored in each feature's score details."""
    from mechscope.autointerp.run import explained
    from mechscope.features.db import open_db

    out = []
    with open_db(str(db_path)) as db:
        have = explained(db, name, explainer)
        for i in live:
            if i in have:
                for sc in db.scores(have[i][0]):
                    if sc["scorer"] == "detection" and sc["status"] == "ok":
                        out.append((sc["details"] or {}).get("balanced_accuracy"))
    return out


def _delphi(args: argparse.Namespace, db_path: Path, name: str, live: list[int]) -> dict:
    """delphi's explainer and detection scorer on the same windows through a fresh server of the
    same kind; then mechscope's detection scorer on delphi's explanations (the agreement)."""
    import json
    import tempfile

    from mechscope.autointerp.backend import make_backend
    from mechscope.autointerp.run import load_examples
    from mechscope.features.db import open_db

    window = lambda e: {"tokens": list(e.tokens), "values": list(e.values)}  # noqa: E731
    feats, splits = [], {}
    with open_db(str(db_path)) as db:
        for i in live:
            d = split(load_examples(db, name, i), n_score=args.n_score)
            splits[i] = d
            feats.append({"index": i, "explain": [window(e) for e in d.explain],
                          "activating": [window(e) for e in d.activating],
                          "negative": [window(e) for e in d.negative]})  # fmt: skip
    proc, url = _server(args, "delphi")
    try:
        tmp = Path(tempfile.mkdtemp())
        (tmp / "in.json").write_text(json.dumps({"url": url, "model": "smollm2", "concurrency": 2,
                                                 "features": feats}))  # fmt: skip
        peer = Path(__file__).parent / "peers" / "run_delphi.py"
        a = _snapshot(proc, url)
        subprocess.run([args.delphi_python, str(peer), str(tmp / "in.json"), str(tmp / "out.json")],
                       check=True)  # fmt: skip
        b = _snapshot(proc, url)
        out = json.loads((tmp / "out.json").read_text())
        # the work alone: delphi's own timing and CPU seconds exclude its imports (torch)
        a["wall"] = b["wall"] - out["explain_seconds"] - out["score_seconds"]
        row = _report("delphi", len(live), a, b, out["work_cpu_seconds"])
        print(f"  whole subprocess: {b['children'] - a['children']:.1f} CPU s with its imports")
        delphi_ba = [f["detection_balanced_accuracy"] for f in out["features"]]
        print(f"  detection balanced accuracy {_mean(delphi_ba)} over "
              f"{sum(x is not None for x in delphi_ba)} features; unparsed or failed answers "
              f"{sum(max(f['unparsed'], 0) for f in out['features'])}, failed calls "
              f"{sum(f['unparsed'] < 0 for f in out['features'])}")  # fmt: skip
        print(f"  explanations: {[f['explanation'] for f in out['features']]}")
        backend = make_backend(f"openai:{url}", model="smollm2", concurrency=2, timeout=900)
        judge = LLMJudge(backend, per_call=args.per_call)
        ours = []
        for f in out["features"]:
            s = SCORERS["detection"](f["explanation"], splits[f["index"]], ScoreContext(judge))
            ours.append(None if s.error else s.details["balanced_accuracy"])
    finally:
        proc.kill()
        proc.wait()
    print(f"  on delphi's explanations, per feature (delphi, mechscope balanced accuracy): "
          f"{[(f['index'], x, y) for f, x, y in zip(out['features'], delphi_ba, ours, strict=True)]}")  # fmt: skip
    pairs = np.array([(x, y) for x, y in zip(delphi_ba, ours, strict=True) if x is not None and y is not None])  # fmt: skip
    if len(pairs) > 2 and np.ptp(pairs[:, 0]) > 0 and np.ptp(pairs[:, 1]) > 0:
        from scipy.stats import pearsonr, spearmanr

        x, y = pairs.T
        print(f"  agreement: Pearson {pearsonr(x, y)[0]:.3f}, Spearman {spearmanr(x, y)[0]:.3f}, "
              f"mean |diff| {np.abs(x - y).mean():.3f} over {len(pairs)} features")  # fmt: skip
    elif len(pairs):
        print(f"  agreement: mean |diff| {np.abs(pairs[:, 0] - pairs[:, 1]).mean():.3f} over "
              f"{len(pairs)} features; correlations undefined (a constant column: degenerate judge)")  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("planted")
    p.add_argument("--llm", action="store_true", help="Also SmolLM2 as explainer and judge.")
    p.add_argument("--n-score", type=int, default=10)
    p.add_argument("--seeds", type=int, default=2, help="Planted corpora (5 features each).")
    p.add_argument("--llm-scorers", default="detection,fuzzing,simulation")
    b = sub.add_parser("builtin")
    b.add_argument("--db", help="A feature database (or --planted N).")
    b.add_argument("--planted", type=int, default=0, help="Planted corpora instead of --db.")
    b.add_argument("--work", default="/tmp/bench_autointerp")
    b.add_argument("--png")
    b.add_argument("--llm-features", type=int, default=0)
    b.add_argument("--llama-server", help="llama.cpp's llama-server binary (else --hf-server).")
    b.add_argument("--hf-server", action="store_true", help="Serve with peers/hf_chat_server.py.")
    b.add_argument("--delphi-python", help="delphi's venv python (needs a server).")
    b.add_argument("--delphi-first", action="store_true", help="Run delphi's part first.")
    b.add_argument("--n-score", type=int, default=10)
    b.add_argument(
        "--backends", default="server", help="server (--llama-server/--hf-server) or local."
    )
    b.add_argument("--per-call", type=int, default=5, help="Windows per mechscope judge call.")
    b.add_argument(
        "--control",
        default="without,with",
        help="mechscope parts, comma-separated: without (no control), with.",
    )
    b.add_argument("--llm-only", action="store_true", help="Only the --llm-features part.")
    for part in (p, b):
        add_device_option(part)  # where the in-process (local) LLM runs
    args = parser.parse_args()
    args.device = pick_device(args.device)
    print(" · ".join(f"{k} {v}" for k, v in machine(args.device).items()))
    planted(args) if args.part == "planted" else builtin(args)


if __name__ == "__main__":
    main()
