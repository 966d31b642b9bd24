"""``mechscope features build``: one streaming pass over a corpus for every feature of every source.

Steps:

1. parse the sources (:mod:`.sources`) and check their dimensions against the model with a
   two-token forward; open or create the database and store the settings, the sources and the
   tokenizer's vocabulary (or, when the database holds an unfinished build with the same
   settings, load its checkpoint);
2. read the corpus once in fixed windows; per batch run the model once, stopped after the deepest
   site any source reads, and for every source merge the batch into its running top-k
   (:mod:`mechscope.neurons.topk`), its histograms and moments
   (:mod:`mechscope.neurons.histogram`) and its interval / negative sample (:mod:`.sketch`);
3. every ``checkpoint_seconds`` write the whole state and the number of batches done into the
   ``build_state`` table in one transaction; after ``kill -9`` the same command loads it, skips
   that many batches of the (deterministic) window stream and goes on, so the result is the same
   as an uninterrupted build's;
4. at the end write every feature (:mod:`.finalize`) and mark the database ``complete``, in one
   transaction.

Memory is the model, one batch's activations and per source ``~8 * unit * (k + cells * m +
negatives) * seq_len`` bytes of example windows: it does not grow with the number of tokens.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from mechscope.errors import MechscopeError
from mechscope.features.db import FeatureDB, create_db
from mechscope.features.heads import carry_peaks, empty_lowest, has_writes, is_head
from mechscope.features.sketch import Sketch, empty_sketch, update_sketch
from mechscope.features.sources import Source, capture_sites, check_sources, parse_source
from mechscope.models.hooked import HookedModel
from mechscope.neurons.histogram import Histogram, empty_histogram, update_histogram
from mechscope.neurons.scan import JACOBIAN_WINDOWS, final_residuals
from mechscope.neurons.topk import TopK, empty_topk, update_topk
from mechscope.progress import progress

__all__ = ["BuildConfig", "SourceState", "build_features"]


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides a build's result (a resumed build must match it)."""

    model: str  # the model's name, as given
    sources: tuple[str, ...]  # mlp:L, attn:L, sae:DIR
    corpus: str | None = None  # a corpus spec (None: the built-in corpus)
    n_tokens: int = 100_000
    seq_len: int = 64
    batch_size: int = 16
    seed: int = 0  # the corpus document order
    k: int = 20  # top examples per feature
    quantiles: int = 8  # interval cells for the interval examples
    per_quantile: int = 2  # examples drawn per interval
    negatives: int = 5  # non-activating examples
    bins: int = 64  # histogram bins
    include_first: bool = False  # rank and count each window's first position too
    n_logit_tokens: int = 10
    n_neighbours: int = 10

    def __post_init__(self) -> None:
        positive = ("n_tokens", "batch_size", "k", "quantiles", "bins", "n_logit_tokens")
        for name in positive:
            if getattr(self, name) < 1:
                raise MechscopeError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("per_quantile", "negatives", "n_neighbours"):
            if getattr(self, name) < 0:
                raise MechscopeError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.seq_len < 2:
            raise MechscopeError(f"seq_len must be at least 2, got {self.seq_len}")

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "sources": list(self.sources)}, sort_keys=True)


@dataclass(eq=False)
class SourceState:
    """The running state of one source."""

    top: TopK
    hist: Histogram
    sketch: Sketch
    low: TopK | None = None  # attn:L: the quietest windows, its negatives (.heads)
    peaks: torch.Tensor | None = None  # attn:L: [unit k d_head] z at each top slot's peak


def _empty(source: Source, cfg: BuildConfig) -> SourceState:
    n = source.readout.n_units
    if not is_head(source):
        return SourceState(
            empty_topk(n, cfg.k, cfg.seq_len),
            empty_histogram(n, cfg.bins),
            empty_sketch(n, cfg.seq_len, cfg.quantiles, cfg.per_quantile, cfg.negatives),
        )
    return SourceState(
        empty_topk(n, cfg.k, cfg.seq_len),
        empty_histogram(n, cfg.bins),
        empty_sketch(n, cfg.seq_len, cfg.quantiles, cfg.per_quantile, 0),
        empty_lowest(n, cfg.negatives, cfg.seq_len),
        torch.zeros((n, cfg.k, source.config["d_head"])),
    )


def _pack(states: list[SourceState], resid: torch.Tensor | None) -> bytes:
    tensors: dict[str, torch.Tensor] = {}
    for i, s in enumerate(states):
        for part in ("top", "hist", "sketch", "low"):
            state = getattr(s, part)
            for key, value in (vars(state) if state is not None else {}).items():
                if isinstance(value, torch.Tensor):
                    tensors[f"{i}.{part}.{key}"] = value.contiguous()
        if s.peaks is not None:
            tensors[f"{i}.peaks"] = s.peaks.contiguous()
    if resid is not None:
        tensors["resid"] = resid.contiguous()
    return save_tensors(tensors)


def _unpack(data: bytes, states: list[SourceState], n_hist: int) -> torch.Tensor | None:
    tensors = load_tensors(data)
    for i, s in enumerate(states):
        s.peaks = tensors.get(f"{i}.peaks", s.peaks)
        for part in ("top", "hist", "sketch", "low"):
            old = getattr(s, part)
            if old is None:
                continue
            fields = {k: tensors.get(f"{i}.{part}.{k}", v) for k, v in vars(old).items()}
            if part == "hist":
                fields["n"] = n_hist
            setattr(s, part, type(old)(**fields))
    return tensors.get("resid")


def _save(db: FeatureDB, states: list[SourceState], resid: Any, done: dict[str, int]) -> None:
    blob = _pack(states, resid)
    with db.backend.transaction():
        db.backend.execute("DELETE FROM build_state")
        db.backend.executemany(
            "INSERT INTO build_state (name, data) VALUES (?, ?)",
            [("tensors", blob), ("progress", json.dumps(done).encode())],
        )


def _vocab(tokenizer: Any, n: int) -> list[tuple[int, str]]:
    size = min(n, len(tokenizer))
    texts = tokenizer.batch_decode(torch.arange(size)[:, None])  # a tensor: converted at once
    texts = [t.replace("\x00", "\u2400") for t in texts]  # PostgreSQL text holds no NUL
    return [*enumerate(texts), *((i, f"<{i}>") for i in range(size, n))]


def _start(db: FeatureDB, model: HookedModel, sources: list[Source], cfg: BuildConfig) -> str:
    """Store the settings, sources and vocabulary of a new build, or check an existing one's.
    Gives the database's status."""
    meta = db.meta()
    if "config" in meta:
        if meta["config"] != cfg.to_json():
            raise MechscopeError(
                f"{db.backend.where} holds a build with other settings; rerun it with the same "
                "options to resume, or pass a new --out"
            )
        return meta.get("status", "building")
    rows = {
        "status": "building", "model": cfg.model, "corpus": cfg.corpus or "builtin",
        "n_tokens": str(cfg.n_tokens), "seq_len": str(cfg.seq_len),
        "include_first": json.dumps(cfg.include_first), "config": cfg.to_json(),
    }  # fmt: skip
    b = db.backend
    with b.transaction():
        b.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows.items())
        b.executemany(
            "INSERT INTO sources (source, kind, hook_name, n_features, config) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (s.name, s.kind, s.hook_name, s.readout.n_units, json.dumps(s.config))
                for s in sources
            ],  # fmt: skip
        )
        b.executemany("INSERT INTO vocab (id, token) VALUES (?, ?)", _vocab(model.tokenizer, model.dims.d_vocab))  # fmt: skip
    return "building"


def _stream(model: HookedModel, cfg: BuildConfig, corpus: Any = None) -> Any:
    from mechscope.corpus import Corpus, batches, load_corpus

    if model.tokenizer is None:
        raise MechscopeError("building features needs a model with a tokenizer")
    return batches(
        corpus if isinstance(corpus, Corpus) else load_corpus(cfg.corpus), model.tokenizer, batch_size=cfg.batch_size,
        seq_len=cfg.seq_len, n_tokens=cfg.n_tokens, seed=cfg.seed,
    )  # fmt: skip


def _update(state: SourceState, source: Source, site_acts: torch.Tensor, tokens: torch.Tensor,
            first: int, start: int) -> None:  # fmt: skip
    acts = source.readout.read(site_acts).float().cpu()
    if not torch.isfinite(acts).all():
        raise MechscopeError(f"non-finite activations at {source.hook_name}; check the model")
    units = torch.tensor(source.readout.units)
    old_windows = state.top.windows
    state.top = update_topk(state.top, acts, tokens, first, start)
    if state.peaks is not None:
        state.peaks = carry_peaks(
            state.top, old_windows, state.peaks, site_acts.cpu(), first, units
        )
    if state.low is not None:
        state.low = update_topk(state.low, acts, tokens, first, start, lowest=True)
    state.hist = update_histogram(state.hist, acts[:, start:].reshape(-1, acts.shape[-1]))
    state.sketch = update_sketch(state.sketch, acts, tokens, first, units, start)


def build_features(
    model: HookedModel,
    cfg: BuildConfig,
    out: str,
    *,
    checkpoint_seconds: float = 120.0,
    quiet: bool = True,
    corpus: Any = None,
) -> dict[str, Any]:
    """Build (or resume, or find complete) the feature database ``out``; give a summary
    ``{"status", "tokens", "windows", "seconds", "sources"}``. ``corpus`` (a
    :class:`~mechscope.corpus.Corpus`) replaces loading ``cfg.corpus``, which then only names it."""
    from mechscope.features.finalize import finalize

    sources = [parse_source(model, s) for s in cfg.sources]
    check_sources(model, sources)
    began = time.perf_counter()
    with create_db(out) as db:
        status = _start(db, model, sources, cfg)
        summary = {"status": status, "sources": [s.name for s in sources]}
        if status == "complete":
            return {**summary, "tokens": int(db.meta()["n_tokens"]), "windows": None, "seconds": 0.0}  # fmt: skip
        states = [_empty(s, cfg) for s in sources]
        saved = dict(db.backend.query("SELECT name, data FROM build_state"))
        done = json.loads(saved["progress"]) if saved else {"batches": 0, "windows": 0, "n": 0}
        if done.get("world", 1) > 1:  # a torchrun build's checkpoint (mechscope.distributed)
            raise MechscopeError(f"{out} holds a build checkpointed by {done['world']} processes; "
                                 f"resume it with torchrun --nproc-per-node {done['world']}")  # fmt: skip
        resid = _unpack(saved["tensors"], states, done["n"]) if saved else None
        start = 0 if cfg.include_first else 1
        sites = sorted({s.hook_name for s in sources})
        total = -(-cfg.n_tokens // (cfg.seq_len * cfg.batch_size))
        bar = progress(_stream(model, cfg, corpus), total=total, desc="features build", quiet=quiet, unit="batch")  # fmt: skip
        last = time.monotonic()
        for i, tokens in enumerate(bar):
            if i < done["batches"]:
                continue  # done before the interruption: its windows are in the checkpoint
            if tokens.shape[1] <= start:
                raise MechscopeError("windows of one token have no position after the first")
            if resid is None and any(has_writes(s) for s in sources):
                resid = final_residuals(model, tokens[:JACOBIAN_WINDOWS], start)
            acts = capture_sites(model, sites, tokens)
            for state, source in zip(states, sources, strict=True):
                _update(state, source, acts[source.hook_name], tokens, done["windows"], start)
            done = {"batches": i + 1, "windows": done["windows"] + len(tokens),
                    "n": states[0].hist.n}  # fmt: skip
            if time.monotonic() - last >= checkpoint_seconds:
                _save(db, states, resid, done)
                last = time.monotonic()
        if not done["windows"]:
            raise MechscopeError("no tokens to build from; the corpus gave no window")
        finalize(db, model, sources, states, resid, cfg, done)
        db.backend.compact()  # the checkpoints' pages
    seconds = time.perf_counter() - began
    tokens_read = done["windows"] * cfg.seq_len
    return {**summary, "status": "complete", "tokens": tokens_read, "windows": done["windows"],
            "seconds": seconds}  # fmt: skip
