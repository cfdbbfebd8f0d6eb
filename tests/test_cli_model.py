"""The command line with a user's own model and loss, ``--version`` and shell completion."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import lowcomm
from tests.test_cli import lowcomm as cli
from tests.test_cli import one_error_line

DATA = ["--data", "synthetic-logistic:400,5", "--workers", "4", "--rounds", "15"]
USER_CODE = """
import torch
from torch import nn
import torch.nn.functional as F


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 2))


def hinge(outputs, y):
    margin = outputs.gather(1, y[:, None]) - outputs.gather(1, 1 - y[:, None])
    return F.relu(1 - margin).mean()


not_a_module = 3
"""


@pytest.fixture
def user_package(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A module of the user's in the working folder, under a name unique to the test."""
    name = f"user_models_{request.node.name.replace('[', '_').replace(']', '').replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(USER_CODE)
    previous = Path.cwd()
    os.chdir(tmp_path)
    yield name
    os.chdir(previous)


def test_own_model_and_loss_at_the_cli_equal_the_api(tmp_path: Path, user_package: str) -> None:
    out = tmp_path / "run"
    sets = ["--set", "lr=0.3"]
    result = cli(
        "run",
        *DATA,
        "--model",
        f"{user_package}:make",
        "--loss",
        f"{user_package}:hinge",
        *sets,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    history = pd.read_csv(out / "history.csv")
    assert history["train_loss"].iloc[-1] < 0.8 * history["train_loss"].iloc[0]
    user = importlib.import_module(user_package)
    direct = lowcomm.run(
        "sgd",
        model=user.make(),
        loss=user.hinge,
        data="synthetic-logistic:400,5",
        workers=4,
        rounds=15,
        settings={"lr": 0.3},
    )
    assert direct is not None
    pd.testing.assert_frame_equal(
        history.drop(columns="wall_time"),
        direct.history.drop(columns="wall_time"),
        check_dtype=False,
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "no_such_package_xyz:make"], "importable package.module:name"),
        (["--model", "{pkg}:not_a_module"], "a callable returning a torch.nn.Module"),
        (["--model", "{pkg}:missing"], "AttributeError"),
        (["--model", "mlp", "--loss", "{pkg}:absent"], "'loss' parameter"),
        (["--model", "logistic", "--loss", "mse"], "cross-entropy for the built-in logistic"),
        (["--loss", "huber"], "one of cross-entropy, mse or package.module:function"),
    ],
)
def test_a_bad_model_or_loss_is_one_error_and_nothing_is_written(
    tmp_path: Path, user_package: str, flags: list[str], message: str
) -> None:
    out = tmp_path / "out"
    args = [flag.format(pkg=user_package) for flag in flags]
    result = cli("run", *DATA, *args, "--out", out)
    assert result.exit_code == 2
    assert message in one_error_line(result)
    assert not out.exists()


def test_version_and_completion() -> None:
    script = Path(sys.executable).parent / "lowcomm"
    version = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"lowcomm {lowcomm.__version__}"
    env = {
        **os.environ,
        "_LOWCOMM_COMPLETE": "complete_bash",
        "COMP_WORDS": "lowcomm comp",
        "COMP_CWORD": "1",
    }
    completion = subprocess.run([script], capture_output=True, text=True, env=env, check=True)
    assert completion.stdout.split() == ["compare"]
