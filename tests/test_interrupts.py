"""SIGINT and SIGTERM stop a run after a round, with its rows so far saved and resumable."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import lowcomm
from lowcomm.cli import app
from lowcomm.engines.session import load_checkpoint
from lowcomm.experiments import execution
from lowcomm.experiments.config import make_config
from lowcomm.experiments.results import finished_run
from tests.test_wire import free_port

DATA = ["--data", "synthetic-logistic:400,5", "--workers", "4"]
SETTINGS = {"data": "synthetic-logistic:400,5", "workers": 4}
# A lowcomm command that sends itself a signal when round ROUND is recorded: a stop at a known
# round, whatever the machine's speed.
AT_ROUND = """
import json, os, signal, sys
import lowcomm
from lowcomm.cli import main
from lowcomm.engines import session
from lowcomm.experiments.interrupts import Interrupted

ROUND, SIGNAL = int(sys.argv[1]), getattr(signal, sys.argv[2])
record = session.record

def record_then_signal(state, *args):
    row = record(state, *args)
    if state.round == ROUND:
        os.kill(os.getpid(), SIGNAL)
    return row

session.record = record_then_signal
if sys.argv[3] != "api":
    main(sys.argv[3:])
try:
    lowcomm.run(**json.loads(sys.argv[4]))
except Interrupted as exc:
    print(exc, file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def at_round(round_: int, name: str, *args: str | Path, cwd: Path | None = None) -> tuple[int, str]:
    """Run ``lowcomm ARGS`` signalled at ``round_``; its exit code and stderr."""
    command = [sys.executable, "-c", AT_ROUND, str(round_), name, *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)
    return done.returncode, done.stderr


def history(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "history.parquet").drop(columns="wall_time")


def straight(rounds: int, algorithm: str, eval_every: int = 1) -> pd.DataFrame:
    """The history of an uninterrupted run of ``rounds``."""
    result = lowcomm.run(algorithm, rounds=rounds, eval_every=eval_every, **SETTINGS)  # type: ignore[arg-type]
    assert result is not None
    return result.history.drop(columns="wall_time")


def test_sigint_mid_run_keeps_the_rows_so_far_and_resumes_bit_identically(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["run", *DATA, "--rounds", "100000", "--checkpoint-every", "5", "--out", out, "-q"]
    process = subprocess.Popen(
        [sys.executable, "-m", "lowcomm", *map(str, args)], stderr=subprocess.PIPE, text=True
    )
    wait_for(out / "checkpoint.pt")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    match = re.fullmatch(
        rf"error: interrupted by SIGINT at round (\d+) of 100000; "
        rf"the history so far is in {re.escape(str(out))} \(--resume continues it\)\n",
        stderr,
    )
    assert match, stderr
    stopped = int(match[1])
    assert pd.read_csv(out / "history.csv")["round"].tolist() == list(range(stopped + 1))
    saved = json.loads((out / "run.json").read_text())
    assert saved["interrupted"] == {"signal": "SIGINT", "round": stopped}
    assert saved["summary"]["rounds"] == stopped and saved["summary"]["divergence"] is None
    assert load_checkpoint(out).round == stopped  # checkpointed where it stopped
    more = ["--rounds", str(stopped + 3), "--out", str(out), "-q"]
    resumed = CliRunner().invoke(app, ["run", "--resume", *more])
    assert resumed.exit_code == 0, resumed.output
    pd.testing.assert_frame_equal(history(out), straight(stopped + 3, "sgd"), check_exact=True)
    assert "interrupted" not in json.loads((out / "run.json").read_text())


def wait_for(path: Path, seconds: float = 90) -> None:
    """Poll until ``path`` exists (a sign that the run is under way)."""
    deadline = time.monotonic() + seconds
    while not path.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.dist
def test_ctrl_c_on_torchrun_saves_the_rows_so_far_and_resumes(tmp_path: Path) -> None:
    """torchrun passes its SIGINT to every rank: rank 0 stops after the round, then the rest."""
    out = tmp_path / "run"
    args = ["run", *DATA, "--engine", "torchdist", "--rounds", "100000"]
    args += ["--checkpoint-every", "5", "--out", str(out), "-q"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    launch += ["--master-port", str(free_port()), "-m", "lowcomm", *args]
    process = subprocess.Popen(launch, stderr=subprocess.PIPE, text=True)
    wait_for(out / "checkpoint.pt")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr  # rank 0's line; the worker rank ended without one
    assert "KeyboardInterrupt" not in stderr
    match = re.fullmatch(r"error: interrupted by SIGINT at round (\d+) of 100000; .*", lines[0])
    assert match, stderr
    stopped = int(match[1])
    assert json.loads((out / "run.json").read_text())["interrupted"]["round"] == stopped
    assert pd.read_csv(out / "history.csv")["round"].tolist() == list(range(stopped + 1))
    more = ["--engine", "simulate", "--rounds", str(stopped + 2), "--out", str(out)]
    resumed = CliRunner().invoke(app, ["run", "--resume", *more])
    assert resumed.exit_code == 0, resumed.output
    pd.testing.assert_frame_equal(history(out), straight(stopped + 2, "sgd"), check_exact=True)


def test_an_asynchronous_run_stopped_between_checkpoints_resumes_bit_identically(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    common = ["run", *DATA, "--algorithm", "async-msgd", "--eval-every", "2", "-q"]
    code, stderr = at_round(
        6, "SIGINT", *common, "--rounds", "20", "--checkpoint-every", "4", "--out", out
    )
    assert (code, stderr) == (
        130,
        f"error: interrupted by SIGINT at round 6 of 20; the history so far is in {out} "
        "(--resume continues it)\n",
    )
    assert load_checkpoint(out).round == 6
    assert pd.read_csv(out / "ledger.csv")["round"].max() == 7  # the replies of update 6
    resumed = CliRunner().invoke(app, ["run", "--resume", "--rounds", "10", "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output
    expected = lowcomm.run("async-msgd", rounds=10, eval_every=2, **SETTINGS)  # type: ignore[arg-type]
    assert expected is not None
    pd.testing.assert_frame_equal(history(out), expected.history.drop(columns="wall_time"))
    pd.testing.assert_frame_equal(pd.read_csv(out / "ledger.csv"), expected.ledger)


def test_sigterm_without_checkpoints_saves_the_rows_so_far(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stderr = at_round(3, "SIGTERM", "run", *DATA, "--rounds", "50", "--out", out, "-q")
    assert (code, stderr) == (
        143,
        f"error: interrupted by SIGTERM at round 3 of 50; the history so far is in {out}\n",
    )
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "history.parquet", "run.json"]
    pd.testing.assert_frame_equal(history(out), straight(3, "sgd"))
    saved = json.loads((out / "run.json").read_text())
    assert saved["interrupted"] == {"signal": "SIGTERM", "round": 3}
    assert saved["summary"]["rounds"] == 3
    assert not finished_run(out, make_config(saved["config"]), lowcomm.__version__)
    again = CliRunner().invoke(app, ["run", *DATA, "--out", str(out)])
    assert again.exit_code == 2 and "holds a run already" in again.stderr


def test_the_python_api_raises_an_interrupt_without_out(tmp_path: Path) -> None:
    settings = json.dumps({**SETTINGS, "rounds": 50})
    code, stderr = at_round(2, "SIGINT", "api", settings, cwd=tmp_path)
    assert (code, stderr) == (
        130,
        "interrupted by SIGINT at round 2 of 50; nothing saved (no output folder)\n",
    )
    assert list(tmp_path.iterdir()) == []


def test_a_killed_overwriting_run_leaves_nothing_of_the_old_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    old = CliRunner().invoke(app, ["run", *DATA, "--algorithm", "gd", "--out", str(out), "-q"])
    assert old.exit_code == 0
    new: list[str | Path] = [
        "run",
        *DATA,
        "--rounds",
        "8",
        "--checkpoint-every",
        "2",
        "--overwrite",
        "--out",
        out,
    ]
    code, _ = at_round(3, "SIGKILL", *new)
    assert code == -signal.SIGKILL
    assert sorted(p.name for p in out.iterdir()) == [".lock", "checkpoint.pt", "run.json"]
    saved = json.loads((out / "run.json").read_text())
    assert (saved["config"]["algorithm"], saved["summary"]) == ("sgd", None)
    resumed = CliRunner().invoke(app, ["run", "--resume", "--out", str(out), "-q"])
    assert resumed.exit_code == 0, resumed.output  # the dead run's lock went with it
    pd.testing.assert_frame_equal(history(out), straight(8, "sgd"))


def test_an_unreadable_checkpoint_names_the_error_when_it_says_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["run", *DATA, "--rounds", "2", "--checkpoint-every", "2", "--out", str(tmp_path)]
    assert CliRunner().invoke(app, [*args, "-q"]).exit_code == 0

    def silent_failure(*args: object) -> None:
        raise AssertionError

    monkeypatch.setattr(execution, "load_checkpoint", silent_failure)
    refused = CliRunner().invoke(app, ["run", "--resume", "--out", str(tmp_path)])
    assert refused.exit_code == 2
    assert refused.stderr == (
        f"error: {tmp_path / 'checkpoint.pt'}: not a readable lowcomm checkpoint (AssertionError)\n"
    )
