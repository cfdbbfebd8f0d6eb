"""Progress where stderr is not a terminal: a line every few seconds and one at the end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from lowcomm.cli import app
from lowcomm.engines.progress import ProgressLines, clock_time, count_progress

RUN = ["--data", "synthetic-logistic:200,5", "--workers", "2", "--rounds", "6"]
LINE = re.compile(r"(.+): round (\d+)/(\d+), loss (\S+), (ETA \S+|\d+:\d\d:\d\d elapsed)")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_every_interval_with_the_pace_eta_and_one_at_the_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = FakeClock()
    lines = ProgressLines(100, "sgd (simulate)", every=10.0, clock=clock)
    for round_, at in [(1, 4.0), (2, 8.0), (3, 12.0), (4, 16.0), (5, 20.0), (10, 40.0)]:
        clock.now = 100.0 + at
        lines.show(round_, 1.0 / round_)
    clock.now = 100.0 + 3725.0
    lines.finish()
    assert capsys.readouterr().err.splitlines() == [
        "sgd (simulate): round 3/100, loss 0.3333, ETA 0:06:28",  # 4 s a round since round 1
        "sgd (simulate): round 10/100, loss 0.1, ETA 0:06:00",
        "sgd (simulate): round 10/100, loss 0.1, 1:02:05 elapsed",
    ]


def test_nothing_is_printed_before_the_first_interval_not_even_at_the_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = FakeClock()
    silent = ProgressLines(5, "x", every=10.0, clock=clock)
    clock.now += 9.0
    silent.show(1, 0.5)
    silent.finish()
    assert capsys.readouterr().err == ""
    late = ProgressLines(5, "x", every=10.0, clock=clock)
    clock.now += 10.0
    late.show(1, 0.5)
    assert capsys.readouterr().err == "x: round 1/5, loss 0.5, ETA -\n"


def _lines(stderr: str) -> list[re.Match[str]]:
    matches = [LINE.fullmatch(line) for line in stderr.splitlines()]
    assert all(matches), stderr
    return [m for m in matches if m is not None]


def test_a_piped_run_prints_progress_lines_that_match_its_history(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "lowcomm", "run", *RUN, "--out", str(out)]
    done = subprocess.run(
        [*argv, "--progress-every", "1e-9"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = _lines(done.stderr)
    history = pd.read_csv(out / "history.csv")
    assert [(m[1], int(m[2]), int(m[3])) for m in lines] == [
        *(("sgd (simulate)", r, 6) for r in range(1, 7)),
        ("sgd (simulate)", 6, 6),
    ]
    assert [m[4] for m in lines] == [f"{x:.4g}" for x in history["train_loss"][1:]] + [
        f"{history['train_loss'].iloc[-1]:.4g}"
    ]
    assert lines[0][5] == "ETA -" and lines[-1][5].endswith(" elapsed")


def test_a_run_shorter_than_the_interval_prints_no_line(tmp_path: Path) -> None:
    done = CliRunner().invoke(app, ["run", *RUN, "--out", str(tmp_path / "run")])
    assert done.exit_code == 0, done.output
    assert done.stderr == "" and "Run summary" in done.stdout


def test_quiet_silences_the_lines(tmp_path: Path) -> None:
    args = ["run", *RUN, "--out", str(tmp_path / "run"), "--progress-every", "1e-9", "-q"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert done.stderr == "" and done.stdout == ""


def test_compare_prints_lines_per_run(tmp_path: Path) -> None:
    args = ["compare", *RUN, "--algorithms", "sgd,gd", "--seeds", "0,1"]
    args += ["--out", str(tmp_path / "cmp"), "--progress-every", "1e-9"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    ends = [m[1] for m in _lines(done.stderr) if m[5].endswith("elapsed")]
    assert ends == ["sgd (simulate)", "sgd (simulate)", "gd (simulate)", "gd (simulate)"]
    assert len(_lines(done.stderr)) == 4 * 7


@pytest.mark.parametrize("every", ["0", "-1", "nan"])
def test_a_non_positive_interval_is_one_error_line(tmp_path: Path, every: str) -> None:
    args = ["run", *RUN, "--out", str(tmp_path / "run"), "--progress-every", every]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2
    assert done.stderr.startswith("error: The 'progress_every' parameter of the run must be ")
    assert len(done.stderr.splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_count_of_runs_prints_a_line_per_interval_without_a_loss(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with count_progress(True, 3, "runs", every=0.0) as advance:
        for _ in range(3):
            advance()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(", ")[0] for line in lines] == [
        "runs: run 1/3",
        "runs: run 2/3",
        "runs: run 3/3",
        "runs: run 3/3",
    ]
    assert lines[1].endswith(", ETA 0:00:00") and lines[-1].endswith(" elapsed")
    with count_progress(False, 3, "runs", every=0.0) as advance:
        advance()
    assert capsys.readouterr().err == ""


def test_a_run_to_a_gradient_budget_shows_rounds_without_a_total_or_eta(
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = FakeClock()
    lines = ProgressLines(None, "sgd (simulate)", every=10.0, clock=clock)
    for round_ in (1, 2):
        clock.now += 100.0  # a slow round: an ETA over 10**12 rounds once overflowed timedelta
        lines.show(round_, 0.5)
    assert capsys.readouterr().err.splitlines() == [
        "sgd (simulate): round 1, loss 0.5, ETA -",
        "sgd (simulate): round 2, loss 0.5, ETA -",
    ]
    assert clock_time(1e30) == "-" and clock_time(3725.0) == "1:02:05"


def test_the_command_line_runs_to_a_budget_with_progress_lines(tmp_path: Path) -> None:
    args = ["run", "--data", "synthetic-logistic:200,5", "--workers", "2", "--grad-budget", "400"]
    args += ["--progress-every", "0.000001", "--out", str(tmp_path)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    shown = [line for line in done.stderr.splitlines() if ": round " in line]
    budget_line = re.compile(r": round \d+, loss \S+, (ETA -|\S+ elapsed)$")
    assert shown and all(budget_line.search(line) for line in shown)
