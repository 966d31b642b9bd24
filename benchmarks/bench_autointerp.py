"""Explanations and scores on planted features and on the built-in model, and their throughput.

``planted``: the five planted features of ``mechscope.autointerp.planted`` (seeds 0 and 1): every
scorer's mean score for the true explanation, the ``tokens`` explainer's and (``--llm``) the
built-in SmolLM2-135M-Instruct's, each beside its shuffled control (another feature's
explanation). Judges: ``lexical`` (no model) and, with ``--llm``, SmolLM2 in-process.

``builtin``: every feature of one source of a feature database built on SmolLM2 (``--db``):
``tokens`` explanations scored by embedding and lexical detection with the shuffled control, a
histogram of both (``--png``); then ``--llm-features`` features explained and scored (detection)
by SmolLM2 in-process, and (``--llama-server``) through llama.cpp's ``llama-server`` on 127.0.0.1
serving the same GGUF file: features per minute for each, and the agreement of the two backends'
P(yes) on the same detection prompts. ``--delphi-python``: delphi explains and detection-scores
the same features on the same windows through the same server, mechscope scores delphi's
explanations too, and the two detection scores are compared feature by feature.

    python benchmarks/bench_autointerp.py planted --llm
    python benchmarks/bench_autointerp.py builtin --db smol.db --png docs/autointerp_hist.png \\
        --llm-features 10 --llama-server /work/peers/llamacpp/build/bin/llama-server
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
from mechscope.errors import MechscopeError  # noqa: E402

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


def _server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """llama.cpp's server on the built-in GGUF file, or the HF stand-in, on a free port."""
    import sys

    import httpx

    from mechscope.models.loading import _builtin_gguf

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    if args.llama_server:  # two slots of 4096 tokens: the two calls in flight run together
        cmd = [args.llama_server, "-m", str(_builtin_gguf()), "--alias", "smollm2", "--host",
               "127.0.0.1", "--port", str(port), "-c", "8192", "-np", "2", "-t", "1"]  # fmt: skip
    else:
        server = Path(__file__).parent / "peers" / "hf_chat_server.py"
        cmd = [sys.executable, str(server), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def _llm_throughput(args: argparse.Namespace, db_path: Path, name: str, live: list[int]) -> None:
    from mechscope.autointerp.backend import make_backend
    from mechscope.autointerp.run import explain_features, load_examples, results, score_features
    from mechscope.features.db import open_db

    specs = {"local": "local"} if "local" in args.backends.split(",") else {}
    proc = None
    if args.llama_server or args.hf_server:
        proc, url = _server(args)
        specs["llama-server" if args.llama_server else "HF chat server"] = f"openai:{url}"
    p_yes = {}
    try:
        for label, spec in specs.items():
            backend = make_backend(spec, model="smollm2" if spec.startswith("openai") else None,
                                   concurrency=2, timeout=900, device=args.device)  # fmt: skip
            with open_db(str(db_path)) as db:
                t0 = time.perf_counter()
                explain_features(db, name, live, LLMExplainer(backend), quiet=True)
                judge = LLMJudge(backend)
                try:
                    s = score_features(db, name, live, ["detection"], ScoreContext(judge),
                                       explainer=backend.name, n_score=args.n_score, quiet=True)  # fmt: skip
                except MechscopeError as exc:  # e.g. fewer than two features explained
                    print(f"{label}: scoring stopped: {exc}")
                    continue
                dt = time.perf_counter() - t0
                rows = results(db, name, live, backend.name)
                det = [r["scores"]["detection"] for r in rows if "detection" in r["scores"]]
                ctl = [r["control"]["detection"] for r in rows if "detection" in r["control"]]
                print(f"{label}: {len(live)} features explained + detection-scored with control "
                      f"in {dt:.1f} s = {60 * len(live) / dt:.2f} features/min; errors "
                      f"{s.errors}; detection {np.mean(det) if det else float('nan'):.3f} vs "
                      f"control {np.mean(ctl) if ctl else float('nan'):.3f}")  # fmt: skip
                f = load_examples(db, name, live[0])
                texts = [e.tokens for e in split(f, n_score=args.n_score).activating]
                p_yes[label] = [r.p_yes for r in judge.detect("numbers", texts)]
        if args.delphi_python and proc is not None:
            _delphi(args, db_path, name, live, url)
    finally:
        if proc is not None:
            proc.kill()
    if len(p_yes) == 2:
        a, b = (np.asarray(v, dtype=float) for v in p_yes.values())
        print(
            f"P(yes) local vs llama.cpp on {len(a)} identical prompts: max |diff| "
            f"{np.max(np.abs(a - b)):.3f}, correlation {np.corrcoef(a, b)[0, 1]:.3f}"
        )


def _delphi(args: argparse.Namespace, db_path: Path, name: str, live: list[int], url: str) -> None:
    """delphi's explainer and detection scorer on the same windows through the same server; then
    mechscope's detection scorer on delphi's explanations (the agreement of the two scorers)."""
    import json
    import tempfile

    from mechscope.autointerp.backend import make_backend
    from mechscope.autointerp.metrics import balanced_accuracy
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
    tmp = Path(tempfile.mkdtemp())
    (tmp / "in.json").write_text(json.dumps({"url": url, "model": "smollm2", "concurrency": 2,
                                             "features": feats}))  # fmt: skip
    peer = Path(__file__).parent / "peers" / "run_delphi.py"
    t0 = time.perf_counter()
    subprocess.run([args.delphi_python, str(peer), str(tmp / "in.json"), str(tmp / "out.json")],
                   check=True)  # fmt: skip
    wall = time.perf_counter() - t0
    out = json.loads((tmp / "out.json").read_text())
    work = out["explain_seconds"] + out["score_seconds"]
    delphi_ba = [f["detection_balanced_accuracy"] for f in out["features"]]
    print(f"delphi: {len(live)} features explained + detection-scored in {work:.1f} s "
          f"({wall:.1f} s with its start-up) = {60 * len(live) / work:.2f} features/min; "
          f"detection balanced accuracy {np.nanmean(np.array(delphi_ba, dtype=float)):.3f}; "
          f"unparsed answers {sum(f['unparsed'] for f in out['features'])}")  # fmt: skip
    judge = LLMJudge(make_backend(f"openai:{url}", model="smollm2", concurrency=2, timeout=900))
    ours = []
    for f in out["features"]:
        d = splits[f["index"]]
        replies = judge.detect(f["explanation"], [e.tokens for e in d.activating + d.negative])
        labels = [True] * len(d.activating) + [False] * len(d.negative)
        ok = [(r.p_yes > 0.5, y) for r, y in zip(replies, labels, strict=True) if not r.error]
        ours.append(balanced_accuracy(*zip(*ok, strict=True)) if ok else None)
    pairs = [
        (a, b) for a, b in zip(delphi_ba, ours, strict=True) if a is not None and b is not None
    ]
    print(f"detection balanced accuracy per feature on delphi's explanations (delphi, mechscope):"
          f" {[(f['index'], a, b) for f, a, b in zip(out['features'], delphi_ba, ours, strict=True)]}")  # fmt: skip
    if len(pairs) > 2:
        from scipy.stats import pearsonr, spearmanr

        a, b = np.array(pairs).T
        print(f"detection balanced accuracy on delphi's explanations: delphi {a.mean():.3f}, "
              f"mechscope {b.mean():.3f}, Pearson {pearsonr(a, b)[0]:.3f}, Spearman "
              f"{spearmanr(a, b)[0]:.3f}, mean |diff| {np.abs(a - b).mean():.3f} over "
              f"{len(pairs)} features")  # fmt: skip


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
    b.add_argument("--n-score", type=int, default=10)
    b.add_argument("--backends", default="local,server", help="local, server or both.")
    b.add_argument("--llm-only", action="store_true", help="Only the --llm-features part.")
    for part in (p, b):
        add_device_option(part)  # where the in-process (local) LLM runs
    args = parser.parse_args()
    args.device = pick_device(args.device)
    print(" · ".join(f"{k} {v}" for k, v in machine(args.device).items()))
    planted(args) if args.part == "planted" else builtin(args)


if __name__ == "__main__":
    main()
