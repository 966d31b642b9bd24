"""Step progress: one line per step with its time when stderr is not a terminal, none when quiet,
a bar instead of lines on a terminal; ``mechscope report`` reports its sections that way."""

from __future__ import annotations

import itertools

import pytest
from click.testing import CliRunner

import mechscope.progress as progress_module
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer
from mechscope.progress import steps
from mechscope.report import Section, build_report


def fake_clock(monkeypatch: pytest.MonkeyPatch, *times: float) -> None:
    ticks = itertools.chain(times, itertools.repeat(times[-1]))
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(ticks))


def test_one_line_per_step_with_its_time(monkeypatch, capsys) -> None:
    fake_clock(monkeypatch, 0.0, 2.5, 10.0, 10.25)  # step a starts, ends; step b starts, ends
    assert list(steps(["a", "b"], str.upper, desc="job")) == ["a", "b"]
    err = capsys.readouterr().err
    assert err == "job: [1/2] A 2.5 s\njob: [2/2] B 0.2 s\n"


def test_quiet_and_terminal_print_no_lines(monkeypatch, capsys) -> None:
    assert list(steps(["a"], str, desc="job", quiet=True)) == ["a"]
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(progress_module, "bars_enabled", lambda quiet=False: not quiet)
    assert list(steps(["a", "b"], str, desc="job")) == ["a", "b"]
    assert "[1/2]" not in capsys.readouterr().err  # the bar names the step instead


def test_report_prints_a_line_per_section(tmp_path, capsys) -> None:
    model = HookedModel(tiny_model("llama"), tiny_tokenizer(["a", "b"]))
    sections = [Section("One", lambda m, ctx: "<p>1</p>"), Section("Two", lambda m, ctx: "")]
    build_report(model, tmp_path, sections=sections)
    lines = capsys.readouterr().err.splitlines()
    assert [line.rsplit(" ", 2)[0] for line in lines] == ["report: [1/2] One", "report: [2/2] Two"]
    assert all(line.endswith(" s") for line in lines)
    build_report(model, tmp_path, sections=sections, quiet=True)
    assert capsys.readouterr().err == ""


def test_report_command_prints_section_lines_then_the_path(tmp_path, monkeypatch) -> None:
    """Through the CLI (stderr captured, so not a terminal): lines on stderr, the path on stdout."""
    from mechscope.cli import report as report_cli
    from mechscope.cli.main import cli

    model = HookedModel(tiny_model("llama"), tiny_tokenizer(["a", "b"]))
    monkeypatch.setattr(report_cli, "load_model", lambda name, quiet=False: model)
    sections = [Section("Only", lambda m, ctx: "")]
    monkeypatch.setattr("mechscope.report.build.SECTIONS", sections)
    result = CliRunner().invoke(cli, ["report", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "r" / "report.html")
    assert result.stderr.startswith("report: [1/1] Only ")


def test_long_work_prints_lines_without_a_terminal(monkeypatch, capsys) -> None:
    """Off a terminal a bar becomes a line per interval with count, rate and ETA, then a last
    line with the time taken; work shorter than the interval prints nothing; quiet never does."""
    import time

    from mechscope.progress import progress

    monkeypatch.setenv("MECHSCOPE_PROGRESS_INTERVAL", "0.05")
    bar = progress(None, total=40, desc="compare", unit="tok")
    for _ in range(4):
        time.sleep(0.06)
        bar.update(10)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2 and "\r" not in "".join(lines)
    assert lines[0].startswith("compare: 10/40 tok (25%), ") and ", ETA " in lines[0]
    assert lines[-1].startswith("compare: 40/40 tok (100%), ") and lines[-1].endswith(" elapsed")
    assert " tok/s" in lines[-1]

    for _ in progress(iter(range(3)), desc="stream", unit="batch"):
        time.sleep(0.06)
    lines = capsys.readouterr().err.splitlines()
    assert lines and lines[-1].startswith("stream: 3 batch, ")  # no total: count and rate

    for _ in progress(range(3), desc="quiet", quiet=True):
        time.sleep(0.06)
    monkeypatch.setenv("MECHSCOPE_PROGRESS_INTERVAL", "60")
    assert list(progress(range(3), desc="short")) == [0, 1, 2]
    assert capsys.readouterr().err == ""
