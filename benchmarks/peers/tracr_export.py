"""Compile small RASP programs with Tracr and export their weights, layout and reference logits.

Runs in Tracr's own virtual environment (``benchmarks/peers/setup_tracr.sh``), never in
mechscope's: it writes plain files that mechscope reads without jax.

For each program ``NAME`` it writes into ``--out``:

- ``NAME.npz``: Tracr's parameters under their Haiku names (``transformer/layer_0/attn/query/w``,
  ...), the unembedding ``unembed`` [d_model d_vocab_out] (Tracr builds it outside the parameters),
  reference inputs ``ref_tokens`` [n pos] (BOS first) and Tracr's logits on them ``ref_logits``
  [n pos d_vocab_out] (its compiled forward, before the argmax it decodes with), its attention
  logits ``ref_attn_logits`` [layer n head pos pos] (scaled, -1e30 where masked) and residuals
  ``ref_residuals`` [2 layer, n pos d_model] (after each attention and each MLP; both on the
  first 16 inputs), and the task
  pairs ``clean``, ``corrupt`` [n pos], ``answer``, ``wrong`` [n];
- ``NAME.json``: the config (layers, heads, key size, MLP width, causal), the residual labels,
  the input and output vocabularies, and the layout: every RASP operation, the model component
  (layer, head or MLP) Tracr compiled it into, the residual directions it writes and the
  operations it reads (by role: query, key, value, input).

Usage: ``/work/peers/venv-tracr/bin/python benchmarks/peers/tracr_export.py --out DIR``
(``--tracr /work/peers/tracr`` is where Tracr's source is).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

PROGRAMS = ("frac_prevs", "detect_abc", "count_less_freq", "pointer")


def build(name, lib, rasp):
    """(program, vocab, max_seq_len) of one named program."""
    if name == "frac_prevs":  # MLP (token == x, numerical) -> head (mean over the prefix)
        return lib.make_frac_prevs(rasp.tokens == "x"), {"x", "y", "z"}, 5
    if name == "detect_abc":  # three token tests, two shift heads, two ANDs
        return lib.detect_pattern(rasp.tokens, "abc"), {"a", "b", "c"}, 5
    if name == "count_less_freq":  # two selector widths, the second reading the first
        return lib.make_count_less_freq(2), {"a", "b", "c"}, 5
    if name == "pointer":  # head -> head (Q-composition): the token at the position tokens[0]
        first = rasp.Aggregate(
            rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == 0), rasp.tokens
        ).named("first")
        target = rasp.Select(rasp.indices, first, rasp.Comparison.EQ).named("at_first")
        return rasp.Aggregate(target, rasp.tokens).named("pointer"), {0, 1, 2, 3}, 5
    raise ValueError(name)


def roles(expr, rasp):
    """The operations an expression reads, by the port of its component that reads them."""
    if isinstance(expr, rasp.Aggregate):
        sel = expr.selector
        return {"q": [sel.queries.label], "k": [sel.keys.label], "v": [expr.sop.label]}
    if isinstance(expr, rasp.SelectorWidth):
        sel = expr.selector
        return {"q": [sel.queries.label], "k": [sel.keys.label]}
    if isinstance(expr, rasp.SequenceMap):
        return {"in": [expr.fst.label, expr.snd.label]}
    if isinstance(expr, rasp.Map):
        return {"in": [expr.inner.label]}
    return {}


def written(matrix: np.ndarray, labels: list[str]) -> set[str]:
    return {labels[j] for j in np.nonzero(np.abs(matrix).sum(0) > 0)[0]}


def layout(model, graph, nodes, rasp) -> list[dict]:
    """Every compiled operation with its components, found by the directions each one writes."""
    labels = list(model.residual_labels)
    cfg = model.model_config
    ks = cfg.key_size
    comps = {}  # component name -> residual directions it writes
    for layer in range(cfg.num_layers):
        wo = np.asarray(model.params[f"transformer/layer_{layer}/attn/linear"]["w"])
        for h in range(cfg.num_heads):
            comps[f"L{layer}H{h}"] = written(wo[h * ks : (h + 1) * ks], labels)
        w2 = np.asarray(model.params[f"transformer/layer_{layer}/mlp/linear_2"]["w"])
        comps[f"MLP{layer}"] = written(w2, labels)
    ops = []
    for label, node in graph.nodes.items():
        if nodes.MODEL_BLOCK not in node or node[nodes.MODEL_BLOCK] is None:
            continue
        expr = node[nodes.EXPR]
        out = {
            str(d.name) if d.value is None else f"{d.name}:{d.value}"
            for d in node[nodes.OUTPUT_BASIS]
        }
        hidden = {f"{label}_selector_width_attn_output"}
        where = [c for c, dirs in comps.items() if dirs & (out | hidden)]
        ops.append(
            {
                "op": label,
                "type": type(expr).__name__,
                "components": sorted(where),
                "writes": sorted(out),
                "reads": roles(expr, rasp),
            }
        )
    return ops


def logits_fn(model, hk, jnp):
    @hk.without_apply_rng
    @hk.transform
    def forward(tokens):
        compiled = model.get_compiled_model()
        out = compiled(tokens, use_dropout=False).transformer_output
        logits = compiled.unembed(out.output, use_unembed_argmax=False)
        return logits, jnp.stack(out.attn_logits), jnp.stack(out.residuals)

    @hk.without_apply_rng
    @hk.transform
    def unembed(eye):
        return model.get_compiled_model().unembed(eye, use_unembed_argmax=False)

    def with_vocab_axis(x):  # a numerical output is squeezed to [... pos]: keep a vocab axis of 1
        x = np.asarray(x)
        return x if x.ndim == want else x[..., None]

    d = len(model.residual_labels)
    want = 3

    def logits(t):  # [n pos vocab], [layer n head pos pos], [2 layer, n pos d_model]
        out, scores, resid = forward.apply(model.params, jnp.asarray(t))
        return with_vocab_axis(out), np.asarray(scores), np.asarray(resid)

    want_u = np.asarray(unembed.apply(model.params, jnp.eye(d)))
    return logits, want_u if want_u.ndim == 2 else want_u[:, None]


def pairs(inputs, outputs, n, seed, ordered):
    """n seeded (clean, corrupt) index pairs whose last-position outputs differ.

    ``ordered`` (a numerical output): the clean output is the larger, so that the metric (the
    output value) moves the same way in every pair.
    """
    rng = np.random.default_rng(seed)
    found = []
    while len(found) < n:
        i, j = (int(k) for k in rng.integers(len(inputs), size=2))
        if outputs[i] != outputs[j]:
            found.append((j, i) if ordered and outputs[i] < outputs[j] else (i, j))
    return found


def export(name, out_dir: Path, n_pairs: int, seed: int) -> None:
    import haiku as hk
    import jax.numpy as jnp
    from tracr.compiler import compiling, lib, nodes, rasp_to_graph
    from tracr.rasp import rasp

    program, vocab, max_len = build(name, lib, rasp)
    model = compiling.compile_rasp_to_model(program, vocab=vocab, max_seq_len=max_len, causal=True)
    graph = model_graph(program, vocab, max_len, compiling, rasp_to_graph)
    forward, unembed = logits_fn(model, hk, jnp)
    enc = model.input_encoder
    words = sorted(vocab)
    inputs = [list(s) for s in itertools.product(words, repeat=max_len)]
    tokens = np.array([enc.encode([enc.bos_token, *s]) for s in inputs])
    runs = [forward(tokens[i : i + 256]) for i in range(0, len(tokens), 256)]
    logits = np.concatenate([r[0] for r in runs])
    numerical = model.output_encoder is None or not hasattr(model.output_encoder, "encoding_map")
    last = logits[:, -1, 0] if numerical else logits[:, -1].argmax(-1)
    chosen = pairs(inputs, [round(float(v), 6) for v in last], n_pairs, seed, numerical)
    clean = tokens[[i for i, _ in chosen]]
    corrupt = tokens[[j for _, j in chosen]]
    if numerical:  # the one output direction against a padded column whose logit is always 0
        answer, wrong = np.zeros(n_pairs, int), np.ones(n_pairs, int)
    else:
        answer = last[[i for i, _ in chosen]]
        wrong = last[[j for _, j in chosen]]
    params = {f"{mod}/{k}": np.asarray(v) for mod, p in model.params.items() for k, v in p.items()}
    ref = np.random.default_rng(seed).choice(len(tokens), size=min(64, len(tokens)), replace=False)
    scores, resid = forward(tokens[ref[:16]])[1:]  # internals of the first 16: small files
    np.savez_compressed(
        out_dir / f"{name}.npz",
        **params,
        unembed=unembed,
        ref_tokens=tokens[ref],
        ref_logits=logits[ref],
        ref_attn_logits=scores,
        ref_residuals=resid,
        clean=clean,
        corrupt=corrupt,
        answer=answer,
        wrong=wrong,
    )
    cfg = model.model_config
    meta = {
        "program": name,
        "output": program.label,
        "config": {
            "num_layers": cfg.num_layers,
            "num_heads": cfg.num_heads,
            "key_size": cfg.key_size,
            "mlp_hidden_size": cfg.mlp_hidden_size,
            "causal": cfg.causal,
            "layer_norm": cfg.layer_norm,
            "max_seq_len": max_len,
        },
        "residual_labels": list(model.residual_labels),
        "input_vocab": {str(k): int(v) for k, v in enc.encoding_map.items()},
        "bos": enc.bos_token,
        "bos_id": int(enc.bos_encoding),
        "output_vocab": None
        if numerical
        else {str(k): int(v) for k, v in model.output_encoder.encoding_map.items()},
        "layout": layout(model, graph, nodes, rasp),
        "pairs": [{"clean": inputs[i], "corrupt": inputs[j]} for i, j in chosen],
    }
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=1))
    print(
        name,
        {k: v.shape for k, v in params.items() if k.endswith("/w")},
        "ops:",
        [(o["op"], o["components"]) for o in meta["layout"]],
    )


def model_graph(program, vocab, max_len, compiling, rasp_to_graph):
    """The RASP graph annotated as the compiler annotates it (bases and craft blocks)."""
    from tracr.compiler import basis_inference, craft_graph_to_model, expr_to_craft_graph
    from tracr.craft import bases
    from tracr.rasp import rasp

    extracted = rasp_to_graph.extract_rasp_graph(program)
    graph = extracted.graph
    basis_inference.infer_bases(graph, extracted.sink, vocab, max_len)
    expr_to_craft_graph.add_craft_components_to_rasp_graph(
        graph,
        bos_dir=bases.BasisDirection(rasp.tokens.label, compiling.COMPILER_BOS),
        mlp_exactness=100,
    )
    craft_graph_to_model.craft_graph_to_model(graph, extracted.sources)
    return graph


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tracr", default="/work/peers/tracr")
    ap.add_argument("--programs", default=",".join(PROGRAMS))
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sys.path.insert(0, args.tracr)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.programs.split(","):
        export(name, args.out, args.pairs, args.seed)


if __name__ == "__main__":
    main()
