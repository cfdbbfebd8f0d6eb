"""TensorBoard scalars per evaluation row, read back with TensorBoard's own event reader."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

import lowcomm
from lowcomm.cli import app
from lowcomm.core.errors import LowcommError
from lowcomm.experiments.tracking import SCALARS, TENSORBOARD_MISSING, run_subfolder, tracking

DATA = {"data": "synthetic-logistic:200,5", "workers": 2}


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the event files in ``folder``: its (step, value) pairs."""
    events = EventAccumulator(str(folder))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def assert_rows_logged(folder: Path, history: pd.DataFrame) -> None:
    """The event files hold every history row's scalars at step = round (float32 values)."""
    logged = scalars(folder)
    assert sorted(logged) == sorted(SCALARS)
    for column in SCALARS:
        steps, values = zip(*logged[column], strict=True)
        assert list(steps) == history["round"].tolist(), column
        expected = history[column].to_numpy(dtype=np.float32)
        assert np.array_equal(np.array(values, dtype=np.float32), expected), column


def test_a_run_logs_every_evaluation_row(tmp_path: Path) -> None:
    board = tmp_path / "board"
    result = lowcomm.run(
        "sgd", rounds=7, eval_every=2, tensorboard=board, out=tmp_path / "run", **DATA
    )
    assert result is not None
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["round"].tolist() == [0, 2, 4, 6, 7]
    assert_rows_logged(board, history)
    assert history["bytes_up"].iloc[-1] > 0 and history["uploads"].iloc[-1] == 14


def test_compare_logs_each_run_in_its_own_folder(tmp_path: Path) -> None:
    board, out = tmp_path / "board", tmp_path / "cmp"
    args = ["compare", "--data", DATA["data"], "--workers", "2", "--rounds", "3"]
    args += ["--algorithms", "sgd,gd,sgd[lr=0.01]", "--seeds", "0,1", "--out", str(out), "-q"]
    done = CliRunner().invoke(app, [*args, "--tensorboard", str(board)])
    assert done.exit_code == 0, done.output
    runs = sorted(str(p.parent.relative_to(board)) for p in board.rglob("events.out.tfevents*"))
    variant = ["sgd_lr=0.01/seed0", "sgd_lr=0.01/seed1"]
    assert runs == ["gd/seed0", "gd/seed1", "sgd/seed0", "sgd/seed1", *variant]
    for run in runs:
        assert_rows_logged(board / run, pd.read_csv(out / run / "history.csv"))


def test_without_tensorboard_the_option_is_one_error_line_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    out, board = tmp_path / "run", tmp_path / "board"
    args = ["run", "--data", DATA["data"], "--out", str(out), "--tensorboard", str(board)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2
    assert done.stderr == f"error: {TENSORBOARD_MISSING}\n"
    assert TENSORBOARD_MISSING == (
        "--tensorboard needs the tensorboard package: pip install 'lowcomm[tensorboard]'"
    )
    assert not out.exists() and not board.exists()
    with pytest.raises(LowcommError, match="needs the tensorboard package"):
        lowcomm.compare(["sgd"], rounds=1, tensorboard=board, **DATA)


def test_no_tensorboard_folder_writes_no_event_file(tmp_path: Path) -> None:
    lowcomm.run("sgd", rounds=2, out=tmp_path / "run", **DATA)
    assert not list(tmp_path.rglob("events.out.tfevents*"))


def test_each_run_of_a_comparison_closes_its_writer_when_it_ends(tmp_path: Path) -> None:
    row = {"round": 0.0} | dict.fromkeys(SCALARS, 1.0)
    with tracking(tmp_path) as track:
        for name in ("sgd/seed0", "gd/seed0"):
            with run_subfolder(name):
                observe = track.observer()
                assert observe is not None
                observe(row)
                assert list(track.writers) == [tmp_path / name]  # only this run's is open
            assert track.writers == {}


def test_an_unwritable_tensorboard_folder_is_one_error_line_before_any_work(
    tmp_path: Path,
) -> None:
    out, board = tmp_path / "run", tmp_path / "file"
    board.write_text("not a folder")
    args = ["run", "--data", DATA["data"], "--out", str(out), "--tensorboard", str(board)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2
    assert done.stderr == f"error: {board}: exists and is not a folder\n"
    assert not out.exists()
