"""Run folders: locked while a run writes them, and holding one run (or comparison) each."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

import lowcomm
from lowcomm.cli import app
from lowcomm.core.errors import DataError
from lowcomm.experiments.run_folder import hold

DATA = ["--data", "synthetic-logistic:400,5", "--workers", "4"]
HOLD = """
import sys, time
from pathlib import Path
from lowcomm.experiments.run_folder import hold
with hold(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


def lowcomm_cli(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result: Result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path: content)."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """Another process holding the lock of ``tmp_path / "run"`` until its stdin closes."""
    folder = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    yield process, folder
    process.kill()
    process.wait()


def test_a_locked_folder_is_refused_naming_its_holder(
    holder: tuple[subprocess.Popen[str], Path],
) -> None:
    process, folder = holder
    named = (
        f"{folder}: in use by another run (pid {process.pid} on {socket.gethostname()}, started "
    )
    refused = lowcomm_cli("run", *DATA, "--rounds", "2", "--out", folder, "-q")
    assert refused.exit_code == 2
    line = one_error_line(refused)
    assert line.startswith(f"error: {named}")
    assert line.endswith("; wait for it or choose another --out")
    with pytest.raises(DataError, match="in use by another run"):
        lowcomm.run(data="synthetic-logistic:400,5", rounds=2, out=folder)
    assert sorted(path.name for path in folder.iterdir()) == [".lock"]  # nothing of a run


def test_compare_is_refused_when_one_of_its_run_folders_is_locked(tmp_path: Path) -> None:
    folder = tmp_path / "cmp" / "gd" / "seed0"
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == b"held\n"
        args = ["compare", *DATA, "--algorithms", "sgd,gd", "--rounds", "2", "-q"]
        refused = lowcomm_cli(*args, "--out", tmp_path / "cmp")
        assert refused.exit_code == 2
        assert f"error: {folder}: in use by another run (pid {process.pid} " in refused.stderr
    finally:
        process.kill()
        process.wait()
    assert not (tmp_path / "cmp" / "compare.json").exists()
    assert not (tmp_path / "cmp" / "sgd" / "seed0" / ".lock").exists()  # released on the error


def test_a_killed_holder_leaves_no_stale_lock(holder: tuple[subprocess.Popen[str], Path]) -> None:
    process, folder = holder
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (folder / ".lock").is_file()  # the file stays, its lock went with the process
    done = lowcomm_cli("run", *DATA, "--rounds", "2", "--out", folder, "-q")
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in folder.iterdir()) == [
        "history.csv",
        "history.parquet",
        "run.json",
    ]


def test_a_new_run_over_a_saved_run_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = ["run", *DATA, "--algorithm", "async-msgd", "--rounds", "4", "--checkpoint-every", "2"]
    assert lowcomm_cli(*first, "--out", out, "-q").exit_code == 0
    (out / "plots.png").write_bytes(b"the old run's plot")
    before = files(out)
    assert set(before) == {
        "checkpoint.pt",
        "history.csv",
        "history.parquet",
        "ledger.csv",
        "plots.png",
        "run.json",
    }
    again: list[str | Path] = [
        "run",
        *DATA,
        "--algorithm",
        "sgd",
        "--rounds",
        "2",
        "--out",
        out,
        "-q",
    ]
    refused = lowcomm_cli(*again)
    assert refused.exit_code == 2
    assert one_error_line(refused) == (
        f"error: {out}: holds a run already (run.json); give --overwrite to replace it, "
        "or --resume to continue it from its checkpoint"
    )
    assert files(out) == before  # byte for byte, nothing added
    with pytest.raises(DataError, match="holds a run already"):
        lowcomm.run("sgd", data="synthetic-logistic:400,5", rounds=2, out=out)
    assert files(out) == before
    replaced = lowcomm_cli(*again, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert sorted(files(out)) == ["history.csv", "history.parquet", "run.json"]
    saved = json.loads((out / "run.json").read_text())
    assert (saved["config"]["algorithm"], saved["summary"]["rounds"]) == ("sgd", 2)
    assert pd.read_csv(out / "history.csv")["round"].tolist() == [0, 1, 2]


def test_the_python_api_overwrites_when_asked(tmp_path: Path) -> None:
    common = {"data": "synthetic-logistic:400,5", "workers": 4, "out": tmp_path}
    lowcomm.run("gd", rounds=3, **common)  # type: ignore[arg-type]
    result = lowcomm.run("sgd", rounds=1, overwrite=True, **common)  # type: ignore[arg-type]
    assert result is not None and result.history["round"].tolist() == [0, 1]
    assert json.loads((tmp_path / "run.json").read_text())["config"]["algorithm"] == "sgd"


def test_overwrite_and_resume_exclude_each_other(tmp_path: Path) -> None:
    both = lowcomm_cli("run", *DATA, "--out", tmp_path, "--resume", "--overwrite")
    assert one_error_line(both) == (
        "error: The 'overwrite' parameter of lowcomm run must be left out with --resume "
        "(a resumed run continues the run in OUT). Got True."
    )
    assert both.exit_code == 2 and list(tmp_path.iterdir()) == []


def test_compare_into_its_own_output_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = ["compare", *DATA, "--algorithms", "sgd,gd", "--rounds", "2", "--out", str(out), "-q"]
    assert lowcomm_cli(*args).exit_code == 0
    before = files(out)
    refused = lowcomm_cli(*args)
    assert refused.exit_code == 2
    assert one_error_line(refused) == (
        f"error: {out}: holds a comparison already (compare.json); give --overwrite to replace it"
    )
    assert files(out) == before
    (out / "compare.json").unlink()  # a comparison stopped before its end: its runs are there
    partial = lowcomm_cli(*args)
    assert one_error_line(partial).startswith(f"error: {out / 'sgd' / 'seed0'}: holds a run")
    assert lowcomm_cli(*args, "--overwrite").exit_code == 0  # as make demo reruns
    assert json.loads((out / "compare.json").read_text())["algorithms"] == ["sgd", "gd"]
    assert not (out / ".lock").exists() and not (out / "sgd" / "seed0" / ".lock").exists()


def test_runs_and_comparisons_never_share_a_folder(tmp_path: Path) -> None:
    lowcomm_cli("run", *DATA, "--rounds", "1", "--out", tmp_path / "run", "-q")
    into_run = ["compare", *DATA, "--algorithms", "gd", "--rounds", "1", "--overwrite"]
    refused = lowcomm_cli(*into_run, "--out", tmp_path / "run")
    assert one_error_line(refused) == (
        f"error: {tmp_path / 'run'}: holds a run (run.json), not a comparison: choose another --out"
    )
    lowcomm_cli("compare", *DATA, "--algorithms", "gd", "--rounds", "1", "--out", tmp_path / "c")
    into_comparison: list[str | Path] = [
        "run",
        *DATA,
        "--rounds",
        "1",
        "--overwrite",
        "--out",
        tmp_path / "c",
    ]
    assert one_error_line(lowcomm_cli(*into_comparison)).endswith(
        "holds a comparison (compare.json), not a run: choose another --out"
    )


def test_only_a_folder_holder_may_write_it(tmp_path: Path) -> None:
    """Two handles on one folder in one process conflict as two processes would."""
    with hold(tmp_path), pytest.raises(DataError, match=f"pid {os.getpid()} "), hold(tmp_path):
        pass
    assert list(tmp_path.iterdir()) == []
