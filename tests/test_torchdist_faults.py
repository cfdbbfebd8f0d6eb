"""Real torchdist runs that lose a rank, disagree on settings, or share a port; async resumes.

The CLI runs under torchrun (one aggregator and two worker ranks over gloo on the loopback) or
as ranks started by hand. A worker rank stopped (SIGSTOP) or killed (SIGKILL) mid-run makes rank
0 save the history so far and exit with one line naming the rank and the round; ranks started
with different settings, or on another run's port, are refused in one line. Every process
started here runs in its own session and is killed with it at the end of its test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import lowcomm
from lowcomm.algorithms.registry import build_algorithm
from lowcomm.cli import app
from lowcomm.engines.session import load_checkpoint
from lowcomm.engines.simulate import Simulation
from lowcomm.engines.torchdist import TorchDist
from tests.test_engine_torchdist import Case, assert_same_run, keep, load, process_group
from tests.test_wire import free_port, spawn

TIMEOUT = 5  # --timeout of the runs here
RUN = ("-m", "lowcomm", "run", "--engine", "torchdist", "--data", "digits", "--workers", "4")
QUIET = ("--timeout", str(TIMEOUT), "-q")
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "3")

Launch = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start commands in sessions of their own (output in files); kill every session at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*command: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = tmp_path / f"process{len(started)}"
        process = subprocess.Popen(
            command,
            stdout=log.with_suffix(".out").open("wb"),
            stderr=log.with_suffix(".err").open("wb"),
            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
            start_new_session=True,
        )
        process.log = log  # type: ignore[attr-defined]
        started.append(process)
        return process

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def stderr(process: subprocess.Popen[bytes]) -> str:
    return process.log.with_suffix(".err").read_text()  # type: ignore[attr-defined,no-any-return]


def said(process: subprocess.Popen[bytes]) -> list[str]:
    """What a process said on stderr, torch's C++ log lines (``[W...]``) aside; no traceback."""
    lines = [line for line in stderr(process).splitlines() if not line.startswith("[W")]
    assert not any("Traceback" in line for line in lines), lines
    return lines


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {seconds} s")
        time.sleep(0.1)


def rank_pid(launcher: int, local_rank: int) -> int:
    """The pid of torchrun's child with ``LOCAL_RANK`` = ``local_rank`` (from /proc)."""
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0") if parent == launcher else []
        except (OSError, ValueError, IndexError):
            continue
        if f"LOCAL_RANK={local_rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no rank with LOCAL_RANK={local_rank} under pid {launcher}")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie that its parent has not reaped yet counts as gone)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def fail_rank_2(launch: Launch, out: Path, signum: int, *settings: str) -> tuple[str, float]:
    """Run under torchrun, send worker rank 2 ``signum`` once a checkpoint exists.

    Returns torchrun's stderr and the seconds from the signal to rank 0's exit.
    """
    command = (*TORCHRUN, *RUN, "--out", str(out), "--checkpoint-every", "10", *settings, *QUIET)
    launcher = launch(*command)
    wait_for((out / "checkpoint.pt").is_file, 120, "a first checkpoint")
    aggregator, worker = rank_pid(launcher.pid, 0), rank_pid(launcher.pid, 2)
    os.kill(worker, signum)
    start = time.monotonic()
    wait_for(lambda: not alive(aggregator), TIMEOUT + 30, "rank 0's exit")
    elapsed = time.monotonic() - start
    with contextlib.suppress(ProcessLookupError):
        os.kill(worker, signal.SIGKILL)  # a stopped rank would hold torchrun for 30 s more
    assert launcher.wait(timeout=60) != 0
    return stderr(launcher), elapsed


def assert_reported(err: str, out: Path, what: str) -> int:
    """One error line from rank 0 naming rank 2, the round and where things are; the round.

    Besides it, only rank 1's line may appear; no traceback from a rank reaches the terminal,
    it is in OUT/rank0.log; rank 0 exited with code 4 (torchrun's summary says so).
    """
    mine = rf"error: rank 2 {what} at round (\d+); the history so far is in {out} "
    mine += rf"\(details in {out}/rank0.log\)"
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    found = [re.fullmatch(mine, line) for line in errors]
    others = [line for line, match in zip(errors, found, strict=True) if match is None]
    assert sum(match is not None for match in found) == 1, errors
    assert all(re.match(r"error: rank 1: the aggregator \(rank 0\) ", line) for line in others)
    assert "GLHF" not in err and "[rank0]" not in err
    assert re.search(r"rank\s*: 0 \(local_rank: 0\)\s*exitcode\s*: 4 ", err)
    assert "PeerError" in (out / "rank0.log").read_text()
    return int(next(match for match in found if match is not None).group(1))


def assert_history_kept(out: Path, round_: int) -> None:
    """The rows of every round done before the one under way, and run.json saying so."""
    history = pd.read_csv(out / "history.csv")
    assert history["round"].tolist() == list(range(round_))  # --eval-every 1
    meta = json.loads((out / "run.json").read_text())
    assert meta["failed"]["round"] == round_ and meta["summary"]["rounds"] == round_ - 1


@pytest.mark.dist
def test_a_stalled_worker_rank_is_named_with_the_round_and_the_history_kept(
    tmp_path: Path, launch: Launch
) -> None:
    out = tmp_path / "out"
    err, elapsed = fail_rank_2(launch, out, signal.SIGSTOP, "--algorithm", "sgd")
    round_ = assert_reported(err, out, f"did not answer within {TIMEOUT} s")
    assert TIMEOUT <= elapsed < TIMEOUT + 30
    assert_history_kept(out, round_)
    # the last checkpoint that was completed: round_ - 1's multiple of 10, or the one before
    # when the stall came while the ranks' state for that checkpoint was being gathered
    last = (round_ - 1) // 10 * 10
    assert load_checkpoint(out).round in (last, last - 10)


@pytest.mark.dist
def test_a_killed_async_worker_rank_is_named_and_the_run_resumes_as_if_never_stopped(
    tmp_path: Path, launch: Launch
) -> None:
    out = tmp_path / "out"
    settings = ("--algorithm", "async-msgd", "--rounds", "150", "--seed", "3")
    err, elapsed = fail_rank_2(launch, out, signal.SIGKILL, *settings)
    round_ = assert_reported(err, out, r"is gone \(its connection closed\)")
    assert elapsed < TIMEOUT + 30
    assert_history_kept(out, round_)
    saved = load_checkpoint(out).round
    assert 10 <= saved < round_ and saved % 10 == 0

    resumed = launch(*TORCHRUN, *RUN, "--out", str(out), "--resume", *QUIET)
    assert resumed.wait(timeout=120) == 0, stderr(resumed)
    history = pd.read_parquet(out / "history.parquet").drop(columns="wall_time")
    simulated = lowcomm.run("async-msgd", data="digits", workers=4, rounds=150, seed=3)
    expected = simulated.history.drop(columns="wall_time")
    pd.testing.assert_frame_equal(history, expected, check_dtype=False, rtol=1e-9, atol=1e-12)


def test_the_timeout_is_a_run_setting_that_a_resume_may_change(tmp_path: Path) -> None:
    out, runner = tmp_path / "out", CliRunner()
    first = ["run", "--workers", "2", "--rounds", "4", "--checkpoint-every", "2", "--out", str(out)]
    assert runner.invoke(app, [*first, "--timeout", "5", "-q"]).exit_code == 0
    assert "timeout" not in load_checkpoint(out).settings  # not a trajectory setting
    again = ["run", "--resume", "--rounds", "6", "--timeout", "60", "--out", str(out), "-q"]
    resumed = runner.invoke(app, again)
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "run.json").read_text())["config"]["timeout"] == 60.0
    refused = runner.invoke(app, ["run", "--timeout", "0", "--out", str(tmp_path / "other")])
    assert refused.exit_code == 2
    assert refused.stderr == (
        "error: The 'timeout' parameter of the run config must be a number > 0.0. Got 0.0.\n"
    )


def by_hand(launch: Launch, port: int, out: Path, *ranks: tuple[str, ...]) -> list[Any]:
    """Start rank r with the settings ``ranks[r]``, without torchrun."""
    env = {"MASTER_PORT": str(port), "WORLD_SIZE": str(len(ranks)), "MASTER_ADDR": "127.0.0.1"}
    return [
        launch(sys.executable, *RUN, "--out", str(out), *settings, *QUIET, env={**env, "RANK": r})
        for r, settings in zip(map(str, range(len(ranks))), ranks, strict=True)
    ]


@pytest.mark.dist
def test_ranks_with_different_settings_refuse_to_run_naming_them(
    tmp_path: Path, launch: Launch
) -> None:
    ranks = by_hand(launch, free_port(), tmp_path / "out", ("--set", "lr=0.1"), ("--l2", "0.01"))
    expected = (
        "error: the ranks were started with different settings (l2: 0.0001 on rank 0, 0.01 on "
        "rank 1; options.lr: 0.1 on rank 0, None on rank 1); start every rank with the same "
        "settings"
    )
    for process in ranks:
        assert process.wait(timeout=120) == 2
        assert said(process) == [expected]


@pytest.mark.dist
def test_a_second_run_on_a_port_in_use_is_refused_on_every_rank(
    tmp_path: Path, launch: Launch
) -> None:
    port, first, second = free_port(), tmp_path / "first", tmp_path / "second"
    long = ("--rounds", "100000", "--checkpoint-every", "5")
    running = by_hand(launch, port, first, long, long)
    wait_for((first / "checkpoint.pt").is_file, 120, "the first run's checkpoint")
    rank0, rank1 = by_hand(launch, port, second, (), ())
    assert rank0.wait(timeout=120) == 2 and rank1.wait(timeout=120) == 2
    refused = "error: The 'MASTER_PORT' parameter of the torchdist engine must be a {}. Got {}."
    free = "port no other process listens on (another run?)"
    assert said(rank0) == [refused.format(free, port)]
    joined = "port of this run's rank 0 (another run's ranks have all joined there)"
    assert said(rank1) == [refused.format(joined, port)]
    assert all(process.poll() is None for process in running)  # the first run goes on


HOGWILD = {
    "sample_sizes": "linear:1,1",
    "step": "inv:0.1,500",
    "compressor": "topk:0.5",
    "error_feedback": True,  # so that workers have a state
}
ASYNC = {
    "hogwild-cap1": (
        build_algorithm("hogwild-ib", HOGWILD),
        {"eval_every": 4, "lag_cap": 1},
    ),
    "msgd-arrival": (
        build_algorithm("async-msgd", {"lr": 0.1, "momentum": 0.5, "batch_size": 4}),
        {"eval_every": 4, "async_order": "arrival"},
    ),
}


def _async_ranks(rank: int, port: int, out: str) -> None:
    """Each case checkpointed at round 12 and resumed to round 30 on torchdist."""
    folder = Path(out)
    with process_group(rank, port):
        for name, (algorithm, options) in ASYNC.items():
            saved = {"checkpoint_every": 6, "checkpoint_dir": folder / name, **options}
            Case().engine(TorchDist, algorithm, 12, **saved).run()
            state = load_checkpoint(folder / name) if rank == 0 else None
            resumed = Case().engine(TorchDist, algorithm, 30, **options).run(state)
            keep(resumed, folder / f"{name}.pt")


@pytest.fixture(scope="module")
def async_resumed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("torchdist-async-resume")
    spawn(_async_ranks, free_port(), str(folder), nprocs=3)
    return folder


@pytest.mark.dist
def test_an_async_checkpoint_holds_what_simulate_s_does_and_resumes_into_the_same_run(
    async_resumed: Path, tmp_path: Path
) -> None:
    algorithm, options = ASYNC["hogwild-cap1"]
    saved = {"checkpoint_every": 6, "checkpoint_dir": tmp_path, **options}
    Case().engine(Simulation, algorithm, 12, **saved).run()
    td, sim = load_checkpoint(async_resumed / "hogwild-cap1"), load_checkpoint(tmp_path)
    assert td.round == sim.round == 12 and td.engine["computing"] == sim.engine["computing"] == []
    assert sorted(td.engine["queue"]) == sorted(sim.engine["queue"])
    for key in ("blocked", "sent_version", "local_rounds", "done", "started"):
        assert str(td.engine[key]) == str(sim.engine[key])
    torch.testing.assert_close(td.workers, sim.workers, rtol=0, atol=0)
    pd.testing.assert_frame_equal(td.ledger.records(), sim.ledger.records())
    uninterrupted = Case().engine(Simulation, algorithm, 30, **options).run()
    assert_same_run(load(async_resumed / "hogwild-cap1.pt"), uninterrupted)


@pytest.mark.dist
def test_a_resumed_arrival_order_run_is_replayed_by_simulate(async_resumed: Path) -> None:
    from lowcomm.engines.asynchrony import event_order

    algorithm, options = ASYNC["msgd-arrival"]
    resumed = load(async_resumed / "msgd-arrival.pt")
    events = event_order(resumed["records"])
    assert len(events) == 30 and all(len(update) == 1 for update in events)
    replay = {k: v for k, v in options.items() if k != "async_order"} | {"replay": events}
    assert_same_run(resumed, Case().engine(Simulation, algorithm, 30, **replay).run())
