"""``mechscope graph``: attribution graphs of a prompt through transcoders for every layer
(JSON in circuit-tracer's graph format, an interactive HTML view), ``graph verify`` (interventions
in the real model) and ``graph train`` (transcoders or a CLT for every layer from one harvest)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from mechscope import DEFAULT_MODEL
from mechscope.cli.common import load_model, quiet_option, write_json
from mechscope.errors import MechscopeError

UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}


def parse_bytes(text: str) -> float:
    """``"4GB"``, ``"500MB"``, ``"2e9"`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([KMGT]?B?)\s*", text.upper())
    try:
        value = float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")
    except (ValueError, KeyError):
        value = float("nan")
    if not value > 0:
        raise MechscopeError(f"cannot read the memory size {text!r}: write e.g. 4GB or 500MB")
    return value


def _tokens(hooked: Any, prompt: str, bos: bool) -> Any:
    return hooked.to_tokens(prompt, prepend_bos=bos)[0]


@click.group(invoke_without_command=True)
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option("--transcoders", "-t", type=click.Path(file_okay=False), help="Transcoder folder.")
@click.option("--prompt", "-p", help="The prompt to attribute (its next token).")
@click.option(
    "--out", "out", default="graph.json", show_default=True, type=click.Path(dir_okay=False)
)
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write the view here.")
@click.option("--features", "features_db", help="Feature database (file or postgresql:// URL) whose top examples the view's hover shows.")  # fmt: skip
@click.option("--features-source", help="Its source per layer, e.g. 'sae:layer_{layer}' (default: the one reading blocks.L.mlp.hook_in).")  # fmt: skip
@click.option(
    "--max-memory", default="4GB", show_default=True, help="Budget for the backward passes."
)
@click.option(
    "--max-feature-nodes", type=int, help="Most influential features kept (default: all)."
)
@click.option(
    "--batch-size", type=int, help="Targets per backward pass (default: from --max-memory)."
)
@click.option("--node-threshold", default=0.8, show_default=True)
@click.option("--edge-threshold", default=0.98, show_default=True)
@click.option("--prepend-bos/--no-prepend-bos", default=True, show_default=True)
@quiet_option
@click.pass_context
def graph(ctx: click.Context, model: str, transcoders: str | None, prompt: str | None, out: str,
          html_out: str | None, features_db: str | None, features_source: str | None, max_memory: str, max_feature_nodes: int | None,
          batch_size: int | None, node_threshold: float, edge_threshold: float,
          prepend_bos: bool, quiet: bool) -> None:  # fmt: skip
    """Build the attribution graph of a prompt (subcommands: verify, train)."""
    if ctx.invoked_subcommand is not None:
        return
    if not transcoders or not prompt:
        raise MechscopeError("mechscope graph needs --transcoders DIR and --prompt TEXT")
    if features_db and not html_out:
        raise MechscopeError("--features feeds the HTML view's hover: pass --html too")
    from mechscope.graphs import GraphConfig, attribute
    from mechscope.graphs.tcfiles import load_transcoders

    db = _open_features(features_db) if features_db else None
    cfg = GraphConfig(
        max_feature_nodes=max_feature_nodes, max_memory=parse_bytes(max_memory),
        batch_size=batch_size,
    )  # fmt: skip
    hooked = load_model(model, quiet=quiet)
    tcs = load_transcoders(transcoders, hooked)
    tokens = _tokens(hooked, prompt, prepend_bos)
    g = attribute(hooked, tcs, tokens, cfg, quiet=quiet, prompt=prompt)
    g.model_name, g.scan = model, str(Path(transcoders).name)
    payload = g.to_dict(node_threshold, edge_threshold, slug=Path(out).stem)
    write_json(out, payload)
    info = payload["metadata"]["info"]
    click.echo(
        f"{info['n_active_features']} active features, {len(payload['nodes'])} nodes and "
        f"{len(payload['links'])} links kept; replacement score {info['replacement_score']:.3f}, "
        f"completeness {info['completeness_score']:.3f}"
    )
    if html_out:
        from mechscope.graphs.examples import node_examples
        from mechscope.viz.graph import graph_page

        examples = node_examples(db, payload, features_source) if db is not None else None
        Path(html_out).write_text(graph_page(payload, examples))
        shown = f" with examples of {len(examples)} features" if examples is not None else ""
        click.echo(f"wrote {html_out}{shown}", err=True)


def _open_features(path: str) -> Any:
    from mechscope.features import open_db

    return open_db(path, readonly=True)


@graph.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option("--transcoders", "-t", required=True, type=click.Path(file_okay=False))
@click.option("--graph", "graph_file", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--node", "nodes", multiple=True, help="Feature node id (default: the 3 most influential)."
)
@click.option("--mode", type=click.Choice(["ablate", "steer"]), default="ablate", show_default=True)
@click.option("--scale", default=2.0, show_default=True, help="Steering: activation x scale.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False))
@click.option("--prepend-bos/--no-prepend-bos", default=True, show_default=True)
@quiet_option
def verify(model: str, transcoders: str, graph_file: str, nodes: tuple[str, ...], mode: str,
           scale: float, json_out: str | None, prepend_bos: bool, quiet: bool) -> None:  # fmt: skip
    """Intervene on graph features in the real model; compare with the graph's prediction."""
    from mechscope.graphs import GraphConfig, attribute
    from mechscope.graphs.tcfiles import load_transcoders
    from mechscope.graphs.verify import verify as run_verify

    try:
        saved = json.loads(Path(graph_file).read_text())
        prompt = saved["metadata"]["prompt"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise MechscopeError(
            f"{graph_file} is not a graph JSON written by mechscope graph"
        ) from exc
    hooked = load_model(model, quiet=quiet)
    tcs = load_transcoders(transcoders, hooked)
    g = attribute(hooked, tcs, _tokens(hooked, prompt, prepend_bos), GraphConfig(), quiet=quiet)
    if not nodes:
        feats = [n for n in saved["nodes"] if n["feature_type"] == "cross layer transcoder"]
        nodes = tuple(n["node_id"] for n in sorted(feats, key=lambda n: n["influence"])[:3])
    checks = run_verify(hooked, tcs, g, list(nodes), mode=mode, scale=scale)
    payload = {
        "model": model,
        "prompt": prompt,
        "mode": mode,
        "checks": [c.to_dict() for c in checks],
    }
    write_json(json_out, payload)
    for c in payload["checks"]:
        click.echo(
            f"{c['node']} (delta {c['delta']:+.3g}): relative error {c['relative_error']:.3f}"
        )
        for t, p, m in list(zip(c["targets"], c["predicted"], c["measured"]))[-3:]:
            click.echo(f"  {t:<16} predicted {p:+.4f}  measured {m:+.4f}")


@graph.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option(
    "--corpus", "-c", default=None, help="Corpus: built-in (default), a file or folder, hf:NAME."
)
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False), help="Transcoder folder."
)
@click.option(
    "--work", type=click.Path(file_okay=False), help="Harvest and checkpoints (default: OUT-work)."
)
@click.option("--kind", type=click.Choice(["clt", "per-layer"]), default="clt", show_default=True)
@click.option(
    "--activation", type=click.Choice(["jumprelu", "topk"]), default="topk", show_default=True
)
@click.option("--d-sae", default=1024, show_default=True, help="Features per layer.")
@click.option(
    "--k", default=32, show_default=True, help="TopK: active features per layer and token."
)
@click.option("--l0-coefficient", default=2e-3, show_default=True, help="JumpReLU sparsity weight.")
@click.option("--tokens", default=50_000, show_default=True, help="Tokens harvested.")
@click.option("--seq-len", default=128, show_default=True, help="Tokens per harvested window.")
@click.option("--steps", default=1000, show_default=True)
@click.option("--batch-size", default=512, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option(
    "--layout",
    type=click.Choice(["saelens", "circuit_tracer"]),
    default="saelens",
    show_default=True,
)
@quiet_option
def train(model: str, corpus: str | None, out: str, work: str | None, kind: str, activation: str,
          d_sae: int, k: int, l0_coefficient: float, tokens: int, seq_len: int, steps: int,
          batch_size: int,
          lr: float, layout: str, quiet: bool) -> None:  # fmt: skip
    """Train transcoders for every layer (a CLT or per-layer) from one harvest; resumable."""
    from mechscope.corpus import load_corpus
    from mechscope.graphs.train import CLTConfig, train_on_model

    cfg = CLTConfig(
        d_sae=d_sae, activation=activation, cross_layer=kind == "clt",
        k=k if activation == "topk" else None, l0_coefficient=l0_coefficient, lr=lr,
        steps=steps, batch_size=batch_size,
    )  # fmt: skip
    hooked = load_model(model, quiet=quiet)
    _, hist = train_on_model(hooked, load_corpus(corpus), cfg, out, work or f"{out}-work",
                             n_tokens=tokens, seq_len=seq_len, layout=layout, quiet=quiet)  # fmt: skip
    last = hist[-1] if hist else {}
    click.echo(
        f"wrote {out}: FVU {last.get('fvu', float('nan')):.3f}, L0 {last.get('l0', float('nan')):.1f} per layer"
    )
