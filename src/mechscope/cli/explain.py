"""``mechscope explain``: write an explanation for every feature of a feature database.

Explainers: ``tokens`` (no LLM), ``local[:MODEL]`` (a Hugging Face model in-process, default the
built-in SmolLM2-135M-Instruct) and ``openai:URL`` (any OpenAI-compatible chat server). Results go
into the database feature by feature; a rerun skips what is done and retries what failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from mechscope.cli.common import quiet_option, write_json


def llm_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options of an LLM backend (shared with ``mechscope score``)."""
    options = [
        click.option("--model", "llm_model", help="Model name on an openai:URL server."),
        click.option("--api-key-env", help="Environment variable holding the server's API key."),
        click.option("--concurrency", default=4, show_default=True, help="Parallel HTTP calls."),
        click.option("--timeout", default=60.0, show_default=True, help="Seconds per HTTP call."),
        click.option("--retries", default=3, show_default=True, help="Retries of a failed call."),
        click.option("--batch", default=8, show_default=True, help="Prompts per local batch."),
        click.option("--prompts", type=click.Path(dir_okay=False), help="Edited prompts.toml."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def backend_options(opts: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": opts["llm_model"],
        "api_key_env": opts["api_key_env"],
        "concurrency": opts["concurrency"],
        "timeout": opts["timeout"],
        "retries": opts["retries"],
        "batch_size": opts["batch"],
    }


@click.command()
@click.argument("database")
@click.option("--source", help="Source to explain (default: the only one).")
@click.option("--features", "feature_spec", default="all", show_default=True, help="0-99, 3,7 or all.")  # fmt: skip
@click.option("--explainer", "-e", default="tokens", show_default=True, help="tokens, local[:MODEL] or openai:URL.")  # fmt: skip
@click.option("--n-explain", default=10, show_default=True, help="Examples shown per feature.")
@llm_options
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@quiet_option
def explain(
    database: str,
    source: str | None,
    feature_spec: str,
    explainer: str,
    n_explain: int,
    json_out: str | None,
    quiet: bool,
    **opts: Any,
) -> None:
    """Explain the features of DATABASE (a file or postgresql:// URL from 'features build')."""
    from mechscope.autointerp.explainers import make_explainer
    from mechscope.autointerp.prompts import load_prompts
    from mechscope.autointerp.run import explain_features, parse_features, pick_source, results
    from mechscope.features.db import open_db

    prompts = load_prompts(opts["prompts"])
    with open_db(database) as db:
        src = pick_source(db, source)
        indices = parse_features(feature_spec, src["n_features"])
        made = make_explainer(explainer, prompts, **backend_options(opts))
        summary = explain_features(
            db, src["source"], indices, made, n_explain=n_explain, batch=opts["batch"], quiet=quiet
        )
        write_json(json_out, {"features": results(db, src["source"], indices, made.name)})
    click.echo(
        f"explained {summary.done}, already done {summary.skipped}, dead {summary.dead}, "
        f"errors {summary.errors} ({made.name})"
    )
    for reason in summary.reasons[:5]:
        click.echo(f"  error {reason}", err=True)
