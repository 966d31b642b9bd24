"""Run delphi (PyPI ``eai-delphi`` 0.1.3) on features exported by bench_autointerp.py: its
DefaultExplainer and DetectionScorer, through its OpenRouter client pointed at an
OpenAI-compatible server on 127.0.0.1 (the same server mechscope's run uses).

    /work/peers/delphi/venv/bin/python run_delphi.py FEATURES.json OUT.json

FEATURES.json: ``{"url", "model", "concurrency", "features": [{"index", "explain", "activating",
"negative"}]}``, each window ``{"tokens": [str], "values": [float]}``. delphi's ``delphi.clients``
imports vLLM at module level although the OpenRouter client never uses it; vLLM needs a GPU
build, so this runner puts an empty stand-in module under that name before importing delphi.
Calls run ``concurrency`` at a time (its client's 100 s timeout is fixed in delphi's code), at
most ``max_tokens`` tokens each; a record whose call fails after the client's retry is counted
(``unparsed`` -1) instead of stopping the run. OUT.json: seconds for explaining and for scoring,
the CPU seconds of this process over that work (not its imports), and per feature the explanation
and the detection balanced accuracy (delphi's text answers give no probabilities through this
client).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import types


class _Stub(types.ModuleType):
    def __getattr__(self, name: str) -> object:
        return type(name, (), {})


_STUBS = ("vllm", "vllm.distributed", "vllm.distributed.parallel_state", "vllm.inputs")

import torch  # noqa: E402
import transformers  # noqa: E402

# transformers resolves these lazily: resolve them now, while no stand-in vllm exists
_ = (transformers.AutoTokenizer, transformers.PreTrainedModel, transformers.PreTrainedTokenizer)
_ = transformers.PreTrainedTokenizerFast
sys.modules.update({name: _Stub(name) for name in _STUBS})
from delphi.clients import OpenRouter  # noqa: E402
from delphi.explainers import DefaultExplainer  # noqa: E402
from delphi.latents import ActivatingExample, Latent, LatentRecord, NonActivatingExample  # noqa: E402
from delphi.scorers import DetectionScorer  # noqa: E402

for _name in _STUBS:  # delphi holds its references; transformers must not see a vllm later
    del sys.modules[_name]


def _active(w: dict) -> ActivatingExample:
    acts = torch.tensor(w["values"], dtype=torch.float32)
    norm = (acts / acts.max().clamp(min=1e-9) * 10).round()
    return ActivatingExample(tokens=torch.zeros(len(acts), dtype=torch.long), activations=acts,
                             str_tokens=w["tokens"], normalized_activations=norm)  # fmt: skip


def _idle(w: dict) -> NonActivatingExample:
    acts = torch.tensor(w["values"], dtype=torch.float32)
    return NonActivatingExample(tokens=torch.zeros(len(acts), dtype=torch.long), activations=acts,
                                str_tokens=w["tokens"])  # fmt: skip


def _balanced(outputs: list) -> tuple[float | None, int]:
    done = [o for o in outputs if o.prediction is not None and o.correct is not None]
    pos = [o for o in done if o.activating]
    neg = [o for o in done if not o.activating]
    if not pos or not neg:
        return None, len(outputs) - len(done)
    tpr = sum(o.prediction for o in pos) / len(pos)
    tnr = sum(not o.prediction for o in neg) / len(neg)
    return (tpr + tnr) / 2, len(outputs) - len(done)


async def main(spec: dict) -> dict:
    client = OpenRouter(spec["model"], api_key="none", base_url=spec["url"] + "/chat/completions",
                        max_tokens=spec.get("max_tokens", 120), temperature=0.0)  # fmt: skip
    sem = asyncio.Semaphore(spec.get("concurrency", 2))
    records = []
    for f in spec["features"]:
        r = LatentRecord(Latent("mechscope", f["index"]))
        r.train = [_active(w) for w in f["explain"]]
        r.test = [_active(w) for w in f["activating"]]
        r.not_active = [_idle(w) for w in f["negative"]]
        records.append(r)

    async def bounded(fn, record):
        async with sem:  # delphi's client raises after its retry: count the failure, go on
            try:
                return await fn(record)
            except RuntimeError:
                return None

    explainer = DefaultExplainer(client, activations=False, threshold=0.3)
    c0 = time.process_time()
    t0 = time.perf_counter()
    explained = await asyncio.gather(*(bounded(explainer, r) for r in records))
    t1 = time.perf_counter()
    for r, e in zip(records, explained, strict=True):
        r.explanation = e.explanation if e is not None else "Explanation could not be generated."
    scorer = DetectionScorer(client, n_examples_shown=5, log_prob=False, temperature=0.0)
    scored = await asyncio.gather(*(bounded(scorer, r) for r in records))
    t2 = time.perf_counter()
    work_cpu = time.process_time() - c0
    rows = []
    for r, s in zip(records, scored, strict=True):
        ba, failed = _balanced(s.score) if s is not None else (None, -1)
        rows.append({"index": r.latent.latent_index, "explanation": r.explanation,
                     "detection_balanced_accuracy": ba, "unparsed": failed})  # fmt: skip
    return {"explain_seconds": t1 - t0, "score_seconds": t2 - t1, "work_cpu_seconds": work_cpu,
            "features": rows}  # fmt: skip


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        result = asyncio.run(main(json.load(fh)))
    with open(sys.argv[2], "w") as fh:
        json.dump(result, fh, indent=1)
