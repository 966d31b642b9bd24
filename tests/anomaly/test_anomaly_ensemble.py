"""The ensemble: a Gaussian over fitted kinds' input scores on held-out trusted inputs, checked
by hand, on planted points, and on the tiny planted backdoor against the clean model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from tiny_world import reply_prompts

from mechscope.anomaly import FitConfig, layer_scores, load_detector, save_detector, score_texts
from mechscope.anomaly.ensemble import ENSEMBLE, ensemble_scores, ensemble_terms, fit_ensemble
from mechscope.anomaly.metrics import separation
from mechscope.errors import MechscopeError

KW = {"kinds": ("update", "confidence"), "ensemble": ("update", "confidence")}
KW |= {"aggregate": "last", "layers": (1, 2), "combine": "mean"}


@pytest.fixture(scope="module")
def ens(world: Any) -> dict[str, Any]:
    return {
        **reply_prompts(11),
        "bad": world.fit(world.bad, **KW),
        "control": world.fit(world.clean, **KW),
    }


def test_the_gaussian_is_fitted_on_the_members_held_out_scores(ens: dict[str, Any]) -> None:
    cal = ens["bad"].calibration
    update = np.asarray(cal["update"]["scores"])
    conf = np.clip(np.asarray(cal["confidence"]["scores"]), 1e-6, 1 - 1e-6)
    y = np.stack([update, np.log(conf / (1 - conf))], 1)  # confidence through its logit
    entry = cal[ENSEMBLE]
    np.testing.assert_allclose(entry["mean"], y.mean(0), rtol=1e-9)
    cov = np.cov(y.T) + 1e-6 * np.diag(np.cov(y.T)).mean() * np.eye(2)
    np.testing.assert_allclose(np.linalg.inv(entry["precision"]), cov, rtol=1e-6)
    d = y - y.mean(0)
    by_hand = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
    np.testing.assert_allclose(entry["scores"], by_hand, rtol=1e-4)  # the held-out scores


def test_input_scores_are_the_distance_of_the_members_input_scores(
    world: Any, ens: dict[str, Any]
) -> None:
    det = ens["bad"]
    texts = ens["trigger"][:3] + ens["clean"][:3]
    got = layer_scores(det, world.bad, texts, quiet=True)
    members = {m: torch.tensor(got[m]["all"]) for m in ("update", "confidence")}
    expect = ensemble_scores(det.calibration[ENSEMBLE], members)
    np.testing.assert_allclose(got[ENSEMBLE]["all"], expect.numpy(), rtol=1e-5)
    result = score_texts(det, world.bad, texts, fpr=0.05, quiet=True)  # the default kind
    assert result.kind == ENSEMBLE
    assert result.threshold == det.threshold(ENSEMBLE, 0.05)
    for item, value in zip(result.inputs, got[ENSEMBLE]["all"], strict=True):
        assert item.score == pytest.approx(value, rel=1e-5)
        assert {f for f, _ in item.features} == {0, 1}  # one term per member, largest first
        assert sum(t for _, t in item.features) == pytest.approx(item.score, rel=1e-4)
        assert item.features[0][1] >= item.features[1][1]
        assert item.flagged == (item.score > result.threshold)
        # the reply position (aggregate last): its token score is the input score
        assert item.token_scores[-1][1] == pytest.approx(item.score, rel=1e-4)


def test_it_is_two_sided_and_sees_members_that_disagree() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=400)
    b = 0.9 * a + 0.44 * rng.normal(size=400)  # correlated members
    entry = fit_ensemble({"a": {"scores": a.tolist()}, "b": {"scores": b.tolist()}}, ("a", "b"))

    def score(x: float, y: float) -> float:
        return float(ensemble_scores(entry, {"a": torch.tensor([x]), "b": torch.tensor([y])}))

    assert score(0, 0) < 0.1
    assert score(-4, -4) > 10  # unusually low counts as much as unusually high
    assert score(-4, -4) == pytest.approx(score(4, 4), rel=0.05)
    assert score(2, -2) > 5 * score(2, 2)  # disagreement the trusted inputs never show
    terms = ensemble_terms(entry, {"a": torch.tensor([3.0]), "b": torch.tensor([0.0])})
    assert float(terms.sum()) == pytest.approx(score(3, 0), rel=1e-6)


def test_saved_and_loaded_it_scores_the_same(
    world: Any, ens: dict[str, Any], tmp_path: Any
) -> None:
    det = ens["bad"]
    again = load_detector(save_detector(det, tmp_path / "det"))
    assert again.config.ensemble == ("update", "confidence")
    texts = ens["trigger"][:2] + ens["clean"][:2]
    a = layer_scores(det, world.bad, texts, kinds=(ENSEMBLE,), quiet=True)
    b = layer_scores(again, world.bad, texts, kinds=(ENSEMBLE,), quiet=True)
    assert a == b


def test_it_flags_the_planted_trigger_and_not_on_the_clean_model(
    world: Any, ens: dict[str, Any]
) -> None:
    def auroc(det: Any, model: Any, pos: list[str]) -> float:
        p = layer_scores(det, model, pos, kinds=(ENSEMBLE,), quiet=True)[ENSEMBLE]["all"]
        n = layer_scores(det, model, ens["clean"], kinds=(ENSEMBLE,), quiet=True)[ENSEMBLE]["all"]
        return separation(p, n).auroc

    for pos in (ens["trigger"], ens["unseen"]):
        # measured 1.000 and 0.984 (update alone 1.000 and 0.985; confidence alone 0.000 and
        # 0.016: in this grammar clean replies are the certain ones, and the two-sided Gaussian
        # reads that too)
        assert auroc(ens["bad"], world.bad, pos) >= 0.95
        assert auroc(ens["control"], world.clean, pos) <= 0.75  # measured 0.403 and 0.504


def test_bad_ensembles_are_one_line_errors(world: Any, ens: dict[str, Any]) -> None:
    with pytest.raises(MechscopeError, match="at least two different terms"):
        FitConfig(kinds=("update",), ensemble=("update",))
    with pytest.raises(MechscopeError, match="'entropy' is not among the fitted kinds"):
        FitConfig(kinds=("update", "confidence"), ensemble=("update", "entropy"))
    plain = world.fit(world.bad, kinds=("update",), layers=(1,))
    with pytest.raises(MechscopeError, match="has no ensemble; fit one with --ensemble"):
        score_texts(plain, world.bad, ens["clean"][:2], kind=ENSEMBLE, quiet=True)
    with pytest.raises(MechscopeError, match="drop --layer"):
        score_texts(ens["bad"], world.bad, ens["clean"][:2], layer=1, quiet=True)


def test_the_command_line_fits_scores_and_evaluates_it(
    world: Any, model_folder: Any, tmp_path: Any
) -> None:
    import json

    from click.testing import CliRunner

    from mechscope.cli.main import cli

    def write(name: str, texts: list[str]) -> str:
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        return str(path)

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, [*args, "--quiet"])

    det = str(tmp_path / "det")
    trusted, clean = write("trusted", world.trusted), write("clean", world.held)
    trig = write("trig", world.triggered)
    common = ["--seq-len", "32", "--n-tokens", "3200", "--layers", "1"]
    fit = run("anomaly", "fit", "--model", str(model_folder), "--trusted", trusted, "--out", det,
              "--kinds", "update,perplexity", "--ensemble", "update,perplexity", *common)  # fmt: skip
    assert fit.exit_code == 0, fit.output
    assert "ensemble     fitted; threshold at 1% FPR" in fit.output
    score = run("anomaly", "score", det, "--corpus", trig, "--json", str(tmp_path / "s.json"))
    assert score.exit_code == 0, score.output
    assert "\nensemble: 40 of 40 inputs flagged" in score.output
    assert json.loads((tmp_path / "s.json").read_text())["kind"] == "ensemble"
    ev = run("anomaly", "eval", det, "--clean", clean, "--set", f"trig={trig}")
    assert ev.exit_code == 0, ev.output
    assert any(line.split()[:3] == ["trig", "ensemble", "all"] for line in ev.output.splitlines())
    bad = run("anomaly", "fit", "--model", str(model_folder), "--trusted", trusted, "--out", det,
              "--kinds", "update", "--ensemble", "update,confidence", *common)  # fmt: skip
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines()[-1].endswith("add it to --kinds")
    joined = run("anomaly", "fit", "--model", str(model_folder), "--trusted", trusted, "--out",
                 det, "--kinds", "update,perplexity,entropy", "--ensemble",
                 "update,perplexity+entropy", *common)  # fmt: skip
    assert joined.exit_code == 2
    assert joined.output.strip().splitlines()[-1].endswith("use --ensemble-combine max")


def test_the_sum_is_one_sided_and_is_the_sum_of_standardised_scores(
    world: Any, ens: dict[str, Any]
) -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(2, 3, size=300), rng.normal(-1, 0.5, size=300)
    cal = {"a": {"scores": a.tolist()}, "b": {"scores": b.tolist()}}
    entry = fit_ensemble(cal, ("a", "b"), combine="sum")

    def score(x: float, y: float) -> float:
        return float(ensemble_scores(entry, {"a": torch.tensor([x]), "b": torch.tensor([y])}))

    by_hand = (5 - a.mean()) / a.std(ddof=1) + (0 - b.mean()) / b.std(ddof=1)
    assert score(5, 0) == pytest.approx(by_hand, rel=1e-5)
    assert score(a.mean() - 9, b.mean()) < 0 < score(a.mean() + 9, b.mean())  # low is ordinary
    np.testing.assert_allclose(entry["scores"], [score(x, y) for x, y in zip(a, b)], rtol=1e-5)
    # fitted through the detector: the members' held-out scores, confidence through its logit
    det = world.fit(world.bad, **{**KW, "ensemble_combine": "sum"})
    texts = ens["trigger"][:3] + ens["clean"][:3]
    got = layer_scores(det, world.bad, texts, quiet=True)
    cal = det.calibration
    conf = np.clip(np.asarray(cal["confidence"]["scores"]), 1e-6, 1 - 1e-6)
    held = {"update": np.asarray(cal["update"]["scores"]), "confidence": np.log(conf / (1 - conf))}
    c = np.clip(np.asarray(got["confidence"]["all"]), 1e-6, 1 - 1e-6)
    now = {"update": np.asarray(got["update"]["all"]), "confidence": np.log(c / (1 - c))}
    expect = sum((now[m] - held[m].mean()) / held[m].std(ddof=1) for m in held)
    np.testing.assert_allclose(got[ENSEMBLE]["all"], expect, rtol=1e-3, atol=1e-4)
    with pytest.raises(MechscopeError, match="ensemble_combine must be one of gaussian, sum, max"):
        FitConfig(kinds=("update", "confidence"), ensemble=("update", "confidence"),
                  ensemble_combine="median")  # fmt: skip


def test_the_max_is_the_largest_standardised_term(world: Any, ens: dict[str, Any]) -> None:
    rng = np.random.default_rng(2)
    a, b, c = rng.normal(2, 3, 300), rng.normal(-1, 0.5, 300), rng.normal(0, 2, 300)
    cal = {k: {"scores": v.tolist()} for k, v in zip("abc", (a, b, c), strict=True)}
    entry = fit_ensemble(cal, ("a", "b+c"), combine="max")
    assert entry["members"] == ["a", "b", "c"] and entry["terms"] == [[0], [1, 2]]

    def z(v: np.ndarray, x: Any) -> Any:
        return (x - v.mean()) / v.std(ddof=1)

    joined = z(b, b) + z(c, c)  # the joined term, standardised again on the same inputs

    def by_hand(x: float, y: float, w: float) -> float:
        t = (z(b, y) + z(c, w) - joined.mean()) / joined.std(ddof=1)
        return max(z(a, x), t)

    def got(x: float, y: float, w: float) -> Any:
        scores = {k: torch.tensor([v]) for k, v in zip("abc", (x, y, w), strict=True)}
        return ensemble_terms(entry, scores)[0], float(ensemble_scores(entry, scores)[0])

    for point in [(20.0, -1.0, 0.0), (2.0, 1.5, 6.0), (-7.0, -3.0, -5.0), (3.0, 0.0, 1.0)]:
        terms, score = got(*point)
        assert score == pytest.approx(by_hand(*point), rel=1e-5)
        assert float(terms.sum()) == pytest.approx(score, rel=1e-5)
    terms, _ = got(20.0, -1.0, 0.0)  # a wins: the joined term's members carry nothing
    assert terms[1] == 0 and terms[2] == 0
    terms, _ = got(2.0, 1.5, 6.0)  # the joined term wins
    assert terms[0] == 0 and terms[1] > 0 and terms[2] > 0
    assert got(-7.0, -3.0, -5.0)[1] < 0  # one-sided: low on every term is ordinary
    np.testing.assert_allclose(
        entry["scores"], [by_hand(*p) for p in zip(a, b, c)], rtol=1e-4, atol=1e-4
    )
    # fitted through the detector: the members' held-out scores read as above
    det = world.fit(world.bad, kinds=("update", "confidence", "perplexity"), layers=(1,),
                    aggregate="last", ensemble=("update", "confidence+perplexity"),
                    ensemble_combine="max")  # fmt: skip
    texts = ens["trigger"][:3] + ens["clean"][:3]
    out = layer_scores(det, world.bad, texts, quiet=True)
    cal = det.calibration

    def logit(x: Any) -> np.ndarray:
        x = np.clip(np.asarray(x), 1e-6, 1 - 1e-6)
        return np.log(x / (1 - x))

    held = {"update": np.asarray(cal["update"]["scores"]),
            "confidence": logit(cal["confidence"]["scores"]),
            "perplexity": np.asarray(cal["perplexity"]["scores"])}  # fmt: skip
    now = {"update": np.asarray(out["update"]["all"]),
           "confidence": logit(out["confidence"]["all"]),
           "perplexity": np.asarray(out["perplexity"]["all"])}  # fmt: skip
    pair = z(held["confidence"], held["confidence"]) + z(held["perplexity"], held["perplexity"])
    second = z(held["confidence"], now["confidence"]) + z(held["perplexity"], now["perplexity"])
    expect = np.maximum(z(held["update"], now["update"]), (second - pair.mean()) / pair.std(ddof=1))
    np.testing.assert_allclose(out[ENSEMBLE]["all"], expect, rtol=1e-3, atol=1e-4)
    scored = score_texts(det, world.bad, texts, quiet=True)  # the default kind: the ensemble
    assert scored.kind == ENSEMBLE
    for item, want in zip(scored.inputs, expect, strict=True):
        assert item.score == pytest.approx(want, rel=1e-3, abs=1e-4)
        assert sum(v for _, v in item.features) == pytest.approx(item.score, rel=1e-3, abs=1e-4)
    with pytest.raises(MechscopeError, match="use --ensemble-combine max"):
        FitConfig(kinds=("update", "confidence", "perplexity"),
                  ensemble=("update", "confidence+perplexity"))  # fmt: skip
    with pytest.raises(MechscopeError, match="name each kind once"):
        FitConfig(kinds=("update", "confidence"), ensemble=("update", "confidence+update"),
                  ensemble_combine="max")  # fmt: skip


def test_presets_are_the_recommended_configurations(
    world: Any, model_folder: Any, tmp_path: Any
) -> None:
    import json

    from click.testing import CliRunner

    from mechscope.anomaly import preset
    from mechscope.cli.main import cli

    # on SmolLM2's 30 layers, the configurations measured in docs/anomaly.md
    assert preset("reply", 30) == {
        "kinds": ("update", "confidence"), "layers": (19,), "aggregate": "last",
        "ensemble": ("update", "confidence"), "ensemble_combine": "sum",
    }  # fmt: skip
    ood = preset("ood", 30)
    assert ood["layers"] == (18, 21)
    assert ood["ensemble"] == ("mahalanobis", "perplexity+attention")
    assert ood["ensemble_combine"] == "max" and ood["aggregate"] == ood["combine"] == "mean"
    FitConfig(**preset("reply", 4))  # valid on any depth
    FitConfig(**preset("ood", 4))
    with pytest.raises(MechscopeError, match="unknown preset 'other'; choose one of reply, ood"):
        preset("other", 30)
    trusted = tmp_path / "trusted.jsonl"
    trusted.write_text("".join(json.dumps({"text": t}) + "\n" for t in world.trusted))
    det = tmp_path / "det"
    common = ["--trusted", str(trusted), "--seq-len", "32", "--n-tokens", "3200", "--quiet"]
    fit = CliRunner().invoke(cli, ["anomaly", "fit", "--model", str(model_folder), "--out",
                                   str(det), "--preset", "ood", "--layers", "1", *common])  # fmt: skip
    assert fit.exit_code == 0, fit.output
    config = load_detector(det).config
    assert config.layers == (1,)  # given explicitly: it wins over the preset
    assert config.kinds == ("mahalanobis", "perplexity", "attention")
    assert config.ensemble == ("mahalanobis", "perplexity+attention")
    assert (config.ensemble_combine, config.aggregate, config.combine) == ("max", "mean", "mean")
    assert ENSEMBLE in load_detector(det).calibration
