"""Explain and score the features of a feature database, resumably.

Work goes feature by feature (explanations in batches of ``batch`` features) and every result is
written as soon as its feature finishes, in one transaction per feature: ``kill -9`` loses at most
the features in flight, and the same call again skips what is stored. What counts as done:

- explaining: the feature has an ``ok`` explanation from this explainer;
- scoring: the explanation has an ``ok`` score from this scorer with the same judge (and a control
  value when the shuffled control is asked for).

Failures (a call that failed, timed out or gave an unparseable reply) are stored as error rows
with their reason and retried on the next run; they are never scores. Features without activating
examples (dead ones) are skipped and counted.

The shuffled control scores each explanation's held-out windows with the explanation of another
feature: among the explained features of the source (sorted by index), feature k borrows the
explanation of feature ``(k + n // 2) mod n``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mechscope.autointerp.explainers import Explainer
from mechscope.autointerp.records import FeatureExamples, Split, as_example, split
from mechscope.autointerp.scorers import SCORERS, ScoreContext
from mechscope.errors import MechscopeError
from mechscope.progress import progress

__all__ = ["RunSummary", "explain_features", "explained", "load_examples", "score_features"]

NEEDS_NEGATIVES = {"detection", "embedding"}
JUDGED = {"detection", "fuzzing", "simulation"}  # scorers whose numbers depend on the judge


@dataclass
class RunSummary:
    """What a run did: counts of features done now, skipped as already done, dead, failed."""

    done: int = 0
    skipped: int = 0
    dead: int = 0
    errors: int = 0
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("done", "skipped", "dead", "errors")} | {
            "reasons": self.reasons[:10]
        }


def load_examples(db: Any, source: str, index: int) -> FeatureExamples:
    """One feature's examples from the database as plain records."""
    kinds = {k: tuple(as_example(e) for e in db.examples(source, index, k)) for k in ("top", "quantile", "negative")}  # fmt: skip
    return FeatureExamples(source, index, kinds["top"], kinds["quantile"], kinds["negative"])


def check_examples(db: Any, source: str, index: int, scorers: Sequence[str] = ()) -> None:
    """A one-line error when the database holds no examples of the kinds the work needs."""
    where = getattr(db.backend, "where", "the database")
    if not db.examples(source, index, "top"):
        raise MechscopeError(
            f"{where} has no top examples for {source}/{index}: "
            "rebuild it with 'mechscope features build' keeping examples"
        )
    need = sorted(NEEDS_NEGATIVES & set(scorers))
    if need and not db.examples(source, index, "negative"):
        raise MechscopeError(
            f"{where} has no negative examples for {source} ({', '.join(need)} need them): "
            "rebuild it with negative examples or drop those scorers"
        )


def explained(
    db: Any, source: str, explainer: str | None = None
) -> dict[int, tuple[int, str, str]]:
    """The latest ``ok`` explanation of each feature: ``{index: (id, explainer, text)}``."""
    sql = "SELECT idx, id, explainer, text FROM explanations WHERE source = ? AND status = 'ok'"
    params: list[Any] = [source]
    if explainer is not None:
        sql += " AND explainer = ?"
        params.append(explainer)
    return {idx: (i, e, t) for idx, i, e, t in db.backend.query(sql + " ORDER BY id", params)}


def explain_features(
    db: Any,
    source: str,
    indices: Sequence[int],
    explainer: Explainer,
    *,
    n_explain: int = 10,
    batch: int = 8,
    quiet: bool = False,
) -> RunSummary:
    """Explain every feature of ``indices`` that this explainer has not explained yet."""
    summary = RunSummary()
    have = explained(db, source, explainer.name)
    todo = [i for i in indices if i not in have]
    summary.skipped = len(indices) - len(todo)
    if todo:
        check_examples(db, source, todo[0])
    bar = progress(range(len(todo)), desc=f"explain {source}", quiet=quiet, unit="feature")
    for start in range(0, len(todo), batch):
        chunk: list[tuple[int, Split]] = []
        for index in todo[start : start + batch]:
            data = split(load_examples(db, source, index), n_explain=n_explain)
            if data.explain:
                chunk.append((index, data))
            else:
                summary.dead += 1
        replies = explainer.explain([d.explain for _, d in chunk]) if chunk else []
        for (index, _), reply in zip(chunk, replies, strict=True):
            db.add_explanation(source, index, explainer.name, reply.text or "", error=reply.error)
            if reply.error:
                summary.errors += 1
                summary.reasons.append(f"{source}/{index}: {reply.error}")
            else:
                summary.done += 1
        bar.update(len(todo[start : start + batch]))
    bar.close()
    return summary


def control_texts(have: dict[int, tuple[int, str, str]]) -> dict[int, tuple[int, str]]:
    """``{index: (other index, its explanation)}``: the shuffled control's explanation."""
    order = sorted(have)
    n = len(order)
    if n < 2:
        return {}
    shift = max(1, n // 2)
    return {idx: (order[(k + shift) % n], have[order[(k + shift) % n]][2]) for k, idx in enumerate(order)}  # fmt: skip


def _done(db: Any, explanation_id: int, judge: str, control: bool) -> set[str]:
    out = set()
    for s in db.scores(explanation_id):
        details = s["details"] or {}
        same = s["scorer"] not in JUDGED or details.get("judge") == judge
        ok = s["status"] == "ok" and same
        if ok and (not control or s["control"] is not None):
            out.add(s["scorer"])
    return out


def score_features(
    db: Any,
    source: str,
    indices: Sequence[int],
    scorers: Sequence[str],
    ctx: ScoreContext,
    *,
    explainer: str | None = None,
    control: bool = True,
    n_explain: int = 10,
    n_score: int = 10,
    quiet: bool = False,
) -> RunSummary:
    """Score the latest explanation of each feature of ``indices`` with every scorer not done."""
    unknown = [s for s in scorers if s not in SCORERS]
    if unknown:
        raise MechscopeError(f"unknown scorer {unknown[0]!r}: choose from {', '.join(SCORERS)}")
    summary = RunSummary()
    have = explained(db, source, explainer)
    wanted = [i for i in indices if i in have]
    if not wanted:
        raise MechscopeError(
            f"no explained features to score in {source}: run 'mechscope explain' first"
        )
    controls = control_texts(have) if control else {}
    if control and not controls:
        raise MechscopeError("the shuffled control needs explanations of two features or more")
    check_examples(db, source, wanted[0], scorers)
    for index in progress(wanted, desc=f"score {source}", quiet=quiet, unit="feature"):
        eid, _, text = have[index]
        todo = [s for s in scorers if s not in _done(db, eid, ctx.judge.name, control)]
        if not todo:
            summary.skipped += 1
            continue
        data = split(load_examples(db, source, index), n_explain=n_explain, n_score=n_score)
        rows = [_score_one(name, text, data, ctx, controls.get(index)) for name in todo]
        with db.backend.transaction():
            for name, (value, ctrl, details, error) in zip(todo, rows, strict=True):
                db.add_score(eid, name, value, ctrl, details, error=error)
                if error:
                    summary.errors += 1
                    summary.reasons.append(f"{source}/{index} {name}: {error}")
        summary.done += 1
    return summary


def _score_one(
    name: str, text: str, data: Split, ctx: ScoreContext, control: tuple[int, str] | None
) -> tuple[float | None, float | None, dict[str, Any], str | None]:
    """(value, control value, details, error) of one scorer on one feature."""
    score = SCORERS[name](text, data, ctx)
    details: dict[str, Any] = dict(score.details)
    if name in JUDGED:
        details["judge"] = ctx.judge.name
    if score.error:
        return None, None, details, score.error
    if control is None:
        return score.value, None, details, None
    other = SCORERS[name](control[1], data, ctx)
    details["control_feature"] = control[0]
    details["control_details"] = other.details
    if other.error:
        return None, None, details, f"shuffled control failed: {other.error}"
    if score.value is None or other.value is None:
        return None, None, details, "undefined score (one class of windows missing)"
    return score.value, other.value, details, None


def parse_features(spec: str, n_features: int) -> list[int]:
    """Feature indices from ``all``, ``0-99``, ``3,7,12`` or a mix (``0-9,42``)."""
    if spec.strip() == "all":
        return list(range(n_features))
    out: list[int] = []
    try:
        for part in spec.split(","):
            lo, dash, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
    except ValueError:
        raise MechscopeError(f"bad --features {spec!r}: use all, 0-99, 3,7,12 or 0-9,42") from None
    bad = [i for i in out if not 0 <= i < n_features]
    if bad:
        raise MechscopeError(f"feature {bad[0]} is out of range: the source has 0-{n_features - 1}")
    return sorted(set(out))


def pick_source(db: Any, source: str | None) -> dict[str, Any]:
    """The named source, or the only one; a one-line error otherwise."""
    sources = db.sources()
    if source is None:
        if len(sources) != 1:
            names = ", ".join(s["source"] for s in sources) or "none"
            raise MechscopeError(
                f"the database has several sources ({names}): pick one with --source"
            )
        return sources[0]
    return db.source(source)


def results(
    db: Any, source: str, indices: Sequence[int], explainer: str | None
) -> list[dict[str, Any]]:
    """``[{"source", "index", "explainer", "explanation", "scores", "control", "errors"}]`` for
    the features with an explanation: the latest ``ok`` score of each scorer, and the latest error
    of scorers that have none."""
    have = explained(db, source, explainer)
    out = []
    for index in indices:
        if index not in have:
            continue
        eid, who, text = have[index]
        scores: dict[str, float] = {}
        control: dict[str, float] = {}
        errors: dict[str, str] = {}
        for s in db.scores(eid):
            if s["status"] == "ok":
                scores[s["scorer"]] = s["value"]
                errors.pop(s["scorer"], None)
                if s["control"] is not None:
                    control[s["scorer"]] = s["control"]
            elif s["scorer"] not in scores:
                errors[s["scorer"]] = s["error"]
        out.append({"source": source, "index": index, "explainer": who, "explanation": text,
                    "scores": scores, "control": control, "errors": errors})  # fmt: skip
    return out
