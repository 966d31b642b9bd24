"""``mechscope score``: score the explanations of a feature database, with a shuffled control.

Scorers: detection, fuzzing, embedding (offline MiniLM), simulation. The judge that answers the
detection, fuzzing and simulation questions is ``lexical`` (no model), ``local[:MODEL]`` or
``openai:URL``. Scores go into the database feature by feature; a rerun skips what is done.
``--per-call N`` puts N numbered windows in one detection or fuzzing call (default 5 through a
server, which holds the reply to a JSON schema; 1 in-process, where a small model's free reply
often stops short).
"""

from __future__ import annotations

from typing import Any

import click

from mechscope.cli.common import quiet_option, write_json
from mechscope.cli.explain import backend_options, llm_options


@click.command()
@click.argument("database")
@click.option("--source", help="Source to score (default: the only one).")
@click.option("--features", "feature_spec", default="all", show_default=True, help="0-99, 3,7 or all.")  # fmt: skip
@click.option("--scorer", "scorer_list", default="detection,fuzzing,embedding,simulation", show_default=True, help="Comma-separated scorers.")  # fmt: skip
@click.option("--judge", default="local", show_default=True, help="lexical, local[:MODEL] or openai:URL.")  # fmt: skip
@click.option("--explainer", "-e", help="Score this explainer's explanations (default: the latest of each feature).")  # fmt: skip
@click.option("--control", type=click.Choice(["none", "shuffled"]), default="none", show_default=True)  # fmt: skip
@click.option("--n-score", default=10, show_default=True, help="Held-out windows of each kind.")
@click.option("--seed", default=0, show_default=True)
@click.option("--per-call", type=click.IntRange(min=1), help="Windows per detection/fuzzing call (default: 5 for openai:URL, 1 in-process).")  # fmt: skip
@llm_options
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False), help="Write HTML here (and a .png).")  # fmt: skip
@quiet_option
def score(
    database: str,
    source: str | None,
    feature_spec: str,
    scorer_list: str,
    judge: str,
    explainer: str | None,
    control: str,
    n_score: int,
    seed: int,
    per_call: int | None,
    json_out: str | None,
    html_out: str | None,
    quiet: bool,
    **opts: Any,
) -> None:
    """Score the explanations in DATABASE against held-out examples."""
    from mechscope.autointerp.backend import make_backend
    from mechscope.autointerp.judges import LexicalJudge, LLMJudge
    from mechscope.autointerp.prompts import load_prompts
    from mechscope.autointerp.run import parse_features, pick_source, results, score_features
    from mechscope.autointerp.scorers import SCORERS, ScoreContext
    from mechscope.errors import MechscopeError
    from mechscope.features.db import open_db

    scorers = [s.strip() for s in scorer_list.split(",") if s.strip()]
    unknown = [s for s in scorers if s not in SCORERS]
    if unknown or not scorers:
        raise MechscopeError(f"unknown scorer {unknown[:1]}: choose from {', '.join(SCORERS)}")
    prompts = load_prompts(opts["prompts"])
    with open_db(database) as db:
        src = pick_source(db, source)
        indices = parse_features(feature_spec, src["n_features"])
        needs_llm = set(scorers) - {"embedding"}
        if judge == "lexical" or not needs_llm:
            the_judge = LexicalJudge()
        else:
            if per_call is None:  # a server can hold a reply to the asked shape; in-process cannot
                per_call = 5 if judge.startswith("openai:") else 1
            backend = make_backend(judge, **backend_options(opts))
            the_judge = LLMJudge(backend, prompts, per_call=per_call)
        ctx = ScoreContext(the_judge, seed=seed)
        summary = score_features(
            db, src["source"], indices, scorers, ctx, explainer=explainer,
            control=control == "shuffled", n_score=n_score, quiet=quiet,
        )  # fmt: skip
        rows = results(db, src["source"], indices, explainer)
        write_json(json_out, {"features": rows})
    if html_out:
        _write_html(html_out, rows, scorers, f"Explanation scores: {database} {src['source']}")
    click.echo(
        f"scored {summary.done}, already done {summary.skipped}, errors {summary.errors} "
        f"(judge {the_judge.name})"
    )
    for reason in summary.reasons[:5]:
        click.echo(f"  error {reason}", err=True)
    _print_means(rows, scorers)


def _write_html(path: str, rows: list[dict[str, Any]], scorers: list[str], title: str) -> None:
    from pathlib import Path

    from mechscope.viz.autointerp import scores_figure, scores_page
    from mechscope.viz.html import save_png

    Path(path).write_text(scores_page(rows, scorers, title))
    png = save_png(scores_figure(rows, scorers), Path(path).with_suffix(".png"))
    click.echo(f"wrote {path} and {png}", err=True)


def _print_means(rows: list[dict[str, Any]], scorers: list[str]) -> None:
    for name in scorers:
        values = [r["scores"][name] for r in rows if name in r["scores"]]
        ctrl = [r["control"][name] for r in rows if name in r["control"]]
        if values:
            line = f"{name:<11} mean {sum(values) / len(values):.3f} over {len(values)} features"
            if ctrl:
                line += f"; shuffled control {sum(ctrl) / len(ctrl):.3f}"
            click.echo(line)
