"""Attribution graphs (Ameisen et al. 2025, "Circuit Tracing"; circuit-tracer's semantics).

Nodes, in this order (the adjacency matrix's rows are targets, its columns sources):
the active transcoder features ``(layer, pos, feature)``, one error node per layer and position
(real MLP output minus the transcoders' reconstruction), one token-embedding node per position,
and the top output logits at the last position (those covering ``logit_prob`` of the
probability, at most ``max_logits``). An edge weight is the direct effect of the source on the
target through the frozen replacement model (:mod:`mechscope.graphs.freeze`): for a feature
source ``a_s * sum_m W_dec[s, m] . g_t[m, pos]``, for an error ``e . g_t``, for a token
``embed . g_t``, where ``g_t`` is the gradient of the target (a feature's encoder pre-activation,
or a logit minus the mean logit) with respect to the MLP outputs and the embeddings.

Steps:

1. record the prompt (:func:`~mechscope.graphs.freeze.snapshot`), encode every layer, errors;
2. pick the batch (targets per backward pass) from ``max_memory`` and print the estimate;
3. one frozen forward of the prompt, then one vectorised backward pass per chunk of ``batch``
   targets, each injecting the targets' encoder (or demeaned unembedding) vectors (the model
   is affine in its inputs, so one forward serves every target); feature rows are gathered per
   position (one product per layer for all the features active there);
4. logits first; then features, all of them or, with ``max_feature_nodes``, the most influential
   first (influence through the rows computed so far, as circuit-tracer does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechscope.errors import MechscopeError
from mechscope.graphs.freeze import Snapshot, frozen_forward, snapshot
from mechscope.graphs.graph import Graph
from mechscope.graphs.memory import choose_batch
from mechscope.graphs.prune import normalize_rows
from mechscope.graphs.transcoders import TranscoderSet
from mechscope.progress import progress

__all__ = ["GraphConfig", "Features", "attribute", "encode_prompt", "salient_logits"]


@dataclass(frozen=True)
class GraphConfig:
    """How to build a graph."""

    max_logits: int = 10  # at most this many logit nodes
    logit_prob: float = 0.95  # ... covering this much of the next-token probability
    max_feature_nodes: int | None = None  # None: every active feature
    max_memory: float = 4e9  # bytes for the backward passes (sets the batch)
    batch_size: int | None = None  # targets per backward pass (None: from max_memory)
    update_every: int = 4  # batches between re-rankings of the features by influence
    zero_first: bool = False  # position 0 (BOS) has no feature or error nodes: its MLP outputs
    # are constants, as circuit-tracer does by default

    def __post_init__(self) -> None:
        if not 0 < self.logit_prob <= 1 or self.max_logits < 1:
            raise MechscopeError("logit_prob must lie in (0, 1] and max_logits be >= 1")
        if self.max_feature_nodes is not None and self.max_feature_nodes < 0:
            raise MechscopeError("max_feature_nodes must be >= 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise MechscopeError("batch_size must be >= 1")


@dataclass
class Features:
    """The active features of a prompt and the transcoders' errors."""

    index: Tensor  # [n 3] long: layer, pos, feature
    values: Tensor  # [n] activations
    pre: Tensor  # [n] encoder pre-activations (the targets' values)
    recon: Tensor  # [layer pos d_model]
    error: Tensor  # [layer pos d_model]


@torch.no_grad()
def encode_prompt(tcs: TranscoderSet, snap: Snapshot, zero_first: bool = False) -> Features:
    """Active features of every layer, the reconstruction and the error nodes."""
    acts, index, values, pre_vals = [], [], [], []
    for layer in range(tcs.n_layers):
        pre = tcs.pre_activations(layer, snap.mlp_in[layer])
        a = tcs.activate(layer, pre)
        if zero_first:
            a[0] = 0
        acts.append(a)
        pos, feat = a.nonzero(as_tuple=True)
        index.append(torch.stack([torch.full_like(pos, layer), pos, feat], 1))
        values.append(a[pos, feat])
        pre_vals.append(pre[pos, feat])
    recon = torch.stack(tcs.decode(acts)).to(snap.mlp_out.dtype)
    error = snap.mlp_out - recon
    if zero_first:  # position 0's MLP outputs become constants, as circuit-tracer treats them
        error[:, 0] = 0
    return Features(torch.cat(index), torch.cat(values), torch.cat(pre_vals), recon, error)


def salient_logits(unembed: Tensor, logits: Tensor, cfg: GraphConfig) -> tuple[Tensor, Tensor]:
    """Token ids and probabilities of the top logits covering ``cfg.logit_prob`` (at most
    ``cfg.max_logits``)."""
    probs = logits.double().softmax(-1)
    top_p, top_i = probs.topk(min(cfg.max_logits, probs.shape[0]))
    cut = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(cfg.logit_prob, dtype=top_p.dtype)))
    n = min(cut + 1, top_p.shape[0])
    return top_i[:n], top_p[:n].float()


class _Rows:
    """Backward passes over one frozen forward; one row per target.

    The replacement model is affine in its inputs, so its gradients do not depend on the
    values it ran on: one forward of the prompt (batch 1) serves every backward pass, and a
    chunk of targets is one vectorised backward pass (``is_grads_batched``), instead of a
    forward of ``batch`` identical copies."""

    def __init__(self, model: Any, tcs: TranscoderSet, snap: Snapshot, feats: Features, batch: int):
        self.model, self.tcs, self.snap, self.feats, self.batch = model, tcs, snap, feats, batch
        n_layers = snap.mlp_out.shape[0]
        self.embed = snap.embed[None].clone().requires_grad_(True)
        self.outs = [snap.mlp_out[i][None].clone().requires_grad_(True) for i in range(n_layers)]
        with torch.enable_grad():
            self.mlp_in, self.unembed = frozen_forward(model, snap, self.embed, self.outs)
        # per source layer: its active features (rows) and their decoders scaled by their
        # activations, in chunks of features at one position (see _chunk)
        self.decoders = []
        for i in range(n_layers):
            rows = (feats.index[:, 0] == i).nonzero(as_tuple=True)[0]
            dec = tcs.W_dec[i][feats.index[rows, 2]] * feats.values[rows, None, None].to(
                tcs.W_dec[i].dtype
            )
            self.decoders.append(_chunk(rows, feats.index[rows, 1], dec))

    def run(self, targets: list[tuple[str, int, int, Tensor]]) -> Tensor:
        """Rows ``[len(targets) n_sources]`` for targets ``(kind, layer, pos, vector)``:
        kind ``feature`` (vector at ``mlp_in[layer][pos]``) or ``logit`` (on the unembedding)."""
        grads_in: dict[int, Tensor] = {}
        grad_logit = None
        batch = len(targets)
        for b, (kind, layer, pos, vec) in enumerate(targets):
            if kind == "feature":
                like = self.mlp_in[layer]
                g = grads_in.setdefault(layer, like.new_zeros(batch, *like.shape))
                g[b, 0, pos] = vec.to(g.dtype)
            else:
                if grad_logit is None:
                    grad_logit = self.unembed.new_zeros(batch, *self.unembed.shape)
                grad_logit[b, 0] = vec.to(grad_logit.dtype)
        outputs = [self.mlp_in[i] for i in grads_in]
        grad_out = list(grads_in.values())
        if grad_logit is not None:
            outputs.append(self.unembed)
            grad_out.append(grad_logit)
        grads = torch.autograd.grad(
            outputs,
            [self.embed, *self.outs],
            grad_out,
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=True,
        )
        return self._assemble(batch, grads[0], list(grads[1:]))

    @torch.no_grad()
    def _assemble(self, batch: int, g_embed: Tensor | None, g_out: list[Tensor | None]) -> Tensor:
        """Rows from the gradients (each ``[batch 1 pos d_model]``; None where zero)."""
        f = self.feats
        n_layers, n_pos, _ = f.error.shape
        n_feat = f.index.shape[0]
        out = f.error.new_zeros(batch, n_feat + (n_layers + 1) * n_pos)
        errors = out[:, n_feat : n_feat + n_layers * n_pos].view(batch, n_layers, n_pos)
        if g_embed is not None:
            out[:, -n_pos:] = (g_embed[:, 0] * self.snap.embed).sum(-1)
        g_pos = []  # per layer [pos batch d_model] views
        for m, g in enumerate(g_out):
            if g is not None:
                errors[:, m] = (g[:, 0] * f.error[m]).sum(-1)
            g_pos.append(None if g is None else g[:, 0].transpose(0, 1))
        for layer, (rows, chunk_pos, chunk, slot, dec) in enumerate(self.decoders):
            acc = None
            for j in range(dec.shape[0] if len(rows) else 0):  # the layers it writes
                if g_pos[layer + j] is None:
                    continue
                part = torch.bmm(g_pos[layer + j][chunk_pos], dec[j].transpose(1, 2))
                acc = part if acc is None else acc + part  # [chunk batch size]
            if acc is not None:
                out[:, rows] = acc[chunk, :, slot].T
        return out


def _chunk(rows: Tensor, pos: Tensor, dec: Tensor) -> tuple[Tensor, ...]:
    """The decoders ``dec [n n_out d_model]`` of features at positions ``pos`` (ascending) in
    chunks of one position each: ``(rows, chunk_pos [c], chunk [n], slot [n], decoders [n_out c
    size d_model])``, feature ``j`` at ``[:, chunk[j], slot[j]]``. One batched product per
    written layer then reads each position's gradient once per chunk rather than once per
    feature. ``size`` minimises chunks + padded slots (the gathered gradients plus the products;
    at most twice the features, as ``size`` 1 would give)."""
    if not len(rows):
        return rows, rows, rows, rows, dec.new_zeros(dec.shape[1], 0, 1, dec.shape[2])
    upos, counts = pos.unique_consecutive(return_counts=True)
    sizes = torch.arange(1, int(counts.max()) + 1)
    n_chunks = (-(-counts[None] // sizes[:, None])).sum(1)  # per candidate size
    size = int(sizes[(n_chunks * (1 + sizes)).argmin()])
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(rows)) - starts.repeat_interleave(counts)  # index within its position
    per_pos = -(-counts // size)  # chunks per position
    first = torch.cumsum(per_pos, 0) - per_pos
    chunk = first.repeat_interleave(counts) + rank // size
    slot = rank % size
    padded = dec.new_zeros(dec.shape[1], int(per_pos.sum()), size, dec.shape[2])
    padded[:, chunk, slot] = dec.transpose(0, 1)
    return rows, upos.repeat_interleave(per_pos), chunk, slot, padded


def _feature_target(tcs: TranscoderSet, feats: Features, j: int) -> tuple[str, int, int, Tensor]:
    layer, pos, idx = (int(v) for v in feats.index[j])
    return ("feature", layer, pos, tcs.W_enc[layer][:, idx])


def attribute(
    model: Any,
    tcs: TranscoderSet,
    tokens: Tensor,
    cfg: GraphConfig = GraphConfig(),
    *,
    quiet: bool = False,
    log: Any = None,
    prompt: str = "",
) -> Graph:
    """The attribution graph of ``tokens`` ([pos]) through the transcoders ``tcs``."""
    tcs.check_model(model)
    model._check_tokens(tokens.reshape(1, -1))
    snap = snapshot(model, tokens)
    dtype = snap.mlp_out.dtype
    tcs = tcs.to(dtype)
    feats = encode_prompt(tcs, snap, cfg.zero_first)
    logit_ids, logit_p = salient_logits(snap.unembed, snap.logits, cfg)
    n_feat = feats.index.shape[0]
    n_select = n_feat if cfg.max_feature_nodes is None else min(n_feat, cfg.max_feature_nodes)
    per_layer = feats.index[:, 0].bincount(minlength=tcs.n_layers).tolist()
    n_out = sum(c * w.shape[1] for c, w in zip(per_layer, tcs.W_dec)) / max(n_feat, 1)
    batch = cfg.batch_size or choose_batch(
        model.dims, snap, n_feat, n_select + len(logit_ids), cfg.max_memory, log, n_out
    )
    rows = _Rows(model, tcs, snap, feats, batch)
    vocab = model.unembed.weight.shape[0]
    logit_rows = []
    for tok in logit_ids.tolist():
        vec = torch.full((vocab,), -1.0 / vocab, dtype=dtype)
        vec[tok] += 1.0
        logit_rows.append(("logit", -1, -1, vec))
    logit_adj = torch.cat(
        [rows.run(logit_rows[i : i + batch]) for i in range(0, len(logit_rows), batch)]
    )
    feat_rows, order = _feature_rows(rows, tcs, feats, logit_adj, logit_p, n_select, cfg, quiet)
    return Graph.assemble(
        model, snap, feats, order, feat_rows, logit_ids, logit_p, logit_adj, prompt
    )


def _feature_rows(
    rows: _Rows,
    tcs: TranscoderSet,
    feats: Features,
    logit_adj: Tensor,
    logit_p: Tensor,
    n_select: int,
    cfg: GraphConfig,
    quiet: bool,
) -> tuple[Tensor, Tensor]:
    """Rows of the chosen features ``[n_select n_sources]`` and their indices into ``feats``."""
    n_feat = feats.index.shape[0]
    batch = rows.batch
    done = torch.zeros(n_feat, dtype=torch.bool)
    out: list[Tensor] = []
    order: list[int] = []
    bar = progress(None, total=n_select, desc="feature rows", quiet=quiet, unit="row")
    while len(order) < n_select:
        if n_select == n_feat:
            pending = torch.arange(n_feat)[~done]
        else:
            score = _partial_influence(
                logit_adj, logit_p, torch.cat(out) if out else None, order, n_feat
            )
            rank = score.argsort(descending=True)
            pending = rank[~done[rank]][: min(cfg.update_every * batch, n_select - len(order))]
            # by layer: a backward pass stops at its highest target layer
            pending = pending[feats.index[pending, 0].argsort(stable=True)]
        for i in range(0, len(pending), batch):
            chunk = pending[i : i + batch].tolist()
            out.append(rows.run([_feature_target(tcs, feats, j) for j in chunk]))
            order += chunk
            done[chunk] = True
            bar.update(len(chunk))
    bar.close()
    width = logit_adj.shape[1]
    return (torch.cat(out) if out else logit_adj.new_zeros(0, width)), torch.tensor(
        order, dtype=torch.long
    )


def _partial_influence(
    logit_adj: Tensor, logit_p: Tensor, feat_adj: Tensor | None, order: list[int], n_feat: int
) -> Tensor:
    """Influence of every active feature on the logits through the rows computed so far."""
    width = logit_adj.shape[1]
    n_done = len(order)
    # square matrix over [computed features..., all sources]: rows = computed targets
    n = n_done + logit_adj.shape[0]
    mat = torch.zeros(n, width, dtype=torch.float32)
    if feat_adj is not None:
        mat[:n_done] = feat_adj.float()
    mat[n_done:] = logit_adj.float()
    norm = normalize_rows(mat)
    # influence flows from the logit rows back through computed feature rows
    weights = torch.zeros(n, dtype=norm.dtype)
    weights[n_done:] = logit_p.to(norm.dtype)
    to_row = torch.tensor(order, dtype=torch.long)
    current = weights @ norm  # [width]
    total = current.clone()
    for _ in range(1000):
        nxt = current[to_row] @ norm[:n_done] if n_done else current.new_zeros(width)
        if not bool(nxt.any()):
            break
        total += nxt
        current = nxt
    return total[:n_feat]
