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
3. one frozen forward with ``batch`` copies, then one backward pass per chunk of ``batch``
   targets, each injecting the targets' encoder (or demeaned unembedding) vectors;
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
    """Backward passes over one frozen forward of ``batch`` copies; one row per target."""

    def __init__(self, model: Any, tcs: TranscoderSet, snap: Snapshot, feats: Features, batch: int):
        self.model, self.tcs, self.snap, self.feats, self.batch = model, tcs, snap, feats, batch
        n_layers, n_pos, d = snap.mlp_out.shape
        self.embed = snap.embed[None].expand(batch, n_pos, d).clone().requires_grad_(True)
        self.outs = [
            snap.mlp_out[i][None].expand(batch, n_pos, d).clone().requires_grad_(True)
            for i in range(n_layers)
        ]
        with torch.enable_grad():
            self.mlp_in, self.unembed = frozen_forward(model, snap, self.embed, self.outs)
        # per source layer: its active features (rows), their positions and their decoders
        # scaled by their activations, flattened over the layers they write [n n_out*d_model]
        self.decoders = []
        for i in range(n_layers):
            rows = (feats.index[:, 0] == i).nonzero(as_tuple=True)[0]
            dec = tcs.W_dec[i][feats.index[rows, 2]] * feats.values[rows, None, None].to(
                tcs.W_dec[i].dtype
            )
            self.decoders.append((rows, feats.index[rows, 1], dec.flatten(1)))

    def run(self, targets: list[tuple[str, int, int, Tensor]]) -> Tensor:
        """Rows ``[len(targets) n_sources]`` for targets ``(kind, layer, pos, vector)``:
        kind ``feature`` (vector at ``mlp_in[layer][pos]``) or ``logit`` (on the unembedding)."""
        n_layers, n_pos, d = self.snap.mlp_out.shape
        grads_in: dict[int, Tensor] = {}
        grad_logit = None
        for b, (kind, layer, pos, vec) in enumerate(targets):
            if kind == "feature":
                g = grads_in.setdefault(layer, torch.zeros_like(self.mlp_in[layer]))
                g[b, pos] = vec.to(g.dtype)
            else:
                if grad_logit is None:
                    grad_logit = torch.zeros_like(self.unembed)
                grad_logit[b] = vec.to(grad_logit.dtype)
        outputs = [self.mlp_in[i] for i in grads_in]
        grad_out = list(grads_in.values())
        if grad_logit is not None:
            outputs.append(self.unembed)
            grad_out.append(grad_logit)
        grads = torch.autograd.grad(
            outputs, [self.embed, *self.outs], grad_out, retain_graph=True, allow_unused=True
        )
        g_embed = _or_zeros(grads[0], self.embed)
        g_out = torch.stack([_or_zeros(g, self.embed) for g in grads[1:]])  # [layer batch pos d]
        return self._assemble(g_embed, g_out)[: len(targets)]

    @torch.no_grad()
    def _assemble(self, g_embed: Tensor, g_out: Tensor) -> Tensor:
        f = self.feats
        batch = g_embed.shape[0]
        tokens = (g_embed * self.snap.embed[None]).sum(-1)  # [batch pos]
        errors = (g_out * f.error[:, None]).sum(-1).transpose(0, 1)  # [batch layer pos]
        feat = torch.zeros(batch, f.index.shape[0], dtype=g_embed.dtype)
        g_pos = g_out.permute(2, 1, 0, 3).contiguous()  # [pos batch layer d]
        for layer, (rows, pos, dec) in enumerate(self.decoders):
            if not len(rows):
                continue
            n_out = dec.shape[1] // g_pos.shape[-1]
            g = g_pos[pos, :, layer : layer + n_out].reshape(len(rows), batch, -1)
            feat[:, rows] = torch.bmm(g, dec.to(g.dtype)[:, :, None])[:, :, 0].T
        return torch.cat([feat, errors.reshape(batch, -1), tokens], 1)


def _or_zeros(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g


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
    batch = cfg.batch_size or choose_batch(
        model.dims, snap, n_feat, n_select + len(logit_ids), cfg.max_memory, log
    )
    rows = _Rows(model, tcs, snap, feats, batch)
    w_u = model.unembed.weight.detach().to(dtype)  # [d_vocab d_model]
    vocab = w_u.shape[0]
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
