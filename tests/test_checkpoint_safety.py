"""A checkpoint is data: a crafted pickle is refused without running, a real one loads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner, Result

from lowcomm.cli import app
from lowcomm.engines.session import CHECKPOINT_NAME, load_checkpoint
from lowcomm.engines.trusted import dumps, loads, trusted_global


class Payload:
    """What an attacker pickles: unpickling it would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def lowcomm(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path: Path) -> None:
    out, marker = tmp_path / "run", tmp_path / "executed"
    result = lowcomm(
        "run", "--data", "digits", "--rounds", "4", "--checkpoint-every", "2", "--out", out, "-q"
    )
    assert result.exit_code == 0
    torch.save({"state": Payload(marker)}, out / CHECKPOINT_NAME)
    with pytest.raises(ValueError, match=r"posix.system|os.system|nt.system"):
        load_checkpoint(out)
    resumed = lowcomm("run", "--data", "digits", "--rounds", "6", "--out", out, "--resume", "-q")
    assert resumed.exit_code == 2
    assert "not a readable lowcomm checkpoint" in resumed.stderr
    assert "system" in resumed.stderr
    assert not marker.exists()


def test_a_real_checkpoint_loads_and_resumes_to_the_uninterrupted_run(tmp_path: Path) -> None:
    common = ["--data", "digits", "--algorithm", "sasg", "--checkpoint-every", "2", "-q"]
    lowcomm("run", *common, "--rounds", "6", "--out", tmp_path / "whole")
    lowcomm("run", *common, "--rounds", "4", "--out", tmp_path / "part")
    assert load_checkpoint(tmp_path / "part").round == 4
    result = lowcomm("run", *common, "--rounds", "6", "--out", tmp_path / "part", "--resume")
    assert result.exit_code == 0
    whole = (tmp_path / "whole" / "history.csv").read_text().splitlines()
    part = (tmp_path / "part" / "history.csv").read_text().splitlines()
    columns = whole[0].split(",")
    keep = [i for i, name in enumerate(columns) if "wall" not in name]
    assert [[r.split(",")[i] for i in keep] for r in part] == [
        [r.split(",")[i] for i in keep] for r in whole
    ]


def test_only_lowcomm_types_and_numpy_arrays_are_trusted() -> None:
    assert trusted_global("lowcomm.engines.session.RunState")
    assert trusted_global("numpy._core.multiarray._reconstruct")
    assert trusted_global("numpy.dtypes.Float64DType")
    for name in ("posix.system", "builtins.eval", "subprocess.Popen", "numpy.load", "lowcommx.a"):
        assert not trusted_global(name)


def test_state_between_ranks_is_read_as_data(tmp_path: Path) -> None:
    state = {"x": torch.arange(3.0), "ids": np.arange(4)}
    back = loads(dumps(state))
    assert torch.equal(back["x"], state["x"]) and (back["ids"] == state["ids"]).all()
    marker = tmp_path / "executed"
    with pytest.raises(ValueError, match="system"):
        loads(dumps([Payload(marker)]))
    assert not marker.exists()


def test_another_runs_checkpoint_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    common = ["run", "--data", "digits", "--rounds", "4", "--checkpoint-every", "2", "-q"]
    lowcomm(*common, "--set", "lr=0.1", "--out", tmp_path / "a")
    lowcomm(*common, "--set", "lr=0.2", "--out", tmp_path / "b")
    (tmp_path / "a" / CHECKPOINT_NAME).replace(tmp_path / "b" / CHECKPOINT_NAME)
    before = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    result = lowcomm("run", "--rounds", "6", "--out", tmp_path / "b", "--resume", "-q")
    assert result.exit_code == 2
    assert "was written by another run" in result.stderr and "options" in result.stderr
    assert "0.1" in result.stderr and "0.2" in result.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()} == before
    assert load_checkpoint(tmp_path / "b").settings["options"]["lr"] == 0.1
