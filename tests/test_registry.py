"""Plug points: register_algorithm and the ``lowcomm.algorithms`` entry-point group."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import lowcomm
from lowcomm.algorithms import registry
from lowcomm.algorithms.describe import describe_algorithms, describe_settings
from lowcomm.algorithms.registry import (
    BUILT_IN,
    REGISTRY,
    EntryPointError,
    Registry,
    build_algorithm,
    register_algorithm,
)
from lowcomm.algorithms.settings import POSITIVE, About, AlgorithmSettings, When, setting
from lowcomm.core.errors import InvalidConfigError
from lowcomm.experiments.config import make_config
from lowcomm.experiments.runner import execute, prepare

# a separately installed package: plain gradient descent on the mean of the workers' full
# gradients, written only against lowcomm's algorithm protocol and settings declarations
PLUGIN = """
from dataclasses import dataclass
from typing import NamedTuple

import torch

from lowcomm.algorithms.base import NoState
from lowcomm.algorithms.settings import POSITIVE, About, AlgorithmSettings, setting
from lowcomm.core.messages import Dense, Download, Upload


class State(NamedTuple):
    params: torch.Tensor


class MeanGD:
    name = "my-alg"
    synchronous = True

    def __init__(self, config):
        self.config = config

    def init(self, problem, sizes, streams):
        params = problem.init_params(streams.generator("init"))
        return State(params), Download(Dense(params[None]), broadcast=True)

    def init_workers(self, problem, workers, streams):
        return NoState()

    def local(self, state, down, data, ctx):
        return Upload.all(Dense(data.grad(down.values))), state

    def aggregate(self, state, up, ctx):
        params = state.params - self.config.lr * up.payload.values.mean(dim=0)
        return State(params), Download(Dense(params[None]), broadcast=True)

    def model(self, state):
        return state.params

    def metrics(self, state):
        return {}


@dataclass(frozen=True)
class MyConfig(AlgorithmSettings):
    ABOUT = About(
        "my-alg", "gradient descent on the mean full gradient", up="a gradient", down="the model"
    )

    lr: float = setting(0.5, POSITIVE, "step size")

    def build(self):
        return MeanGD(self)
"""
RUN = ["run", "--data", "digits", "--workers", "2", "--rounds", "3"]


def installed(root: Path, entry_points: str, package: str = PLUGIN) -> Path:
    """A folder that, on sys.path, is an installed distribution ``thirdparty_alg`` 0.1."""
    (root / "thirdparty_alg").mkdir(parents=True)
    (root / "thirdparty_alg" / "__init__.py").write_text(package)
    info = root / "thirdparty_alg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty_alg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[lowcomm.algorithms]\n{entry_points}\n")
    return root


def lowcomm_cli(*args: str | Path, path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [sys.executable, "-m", "lowcomm", *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, check=False, env=env)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return installed(tmp_path_factory.mktemp("site"), "my-alg = thirdparty_alg:MyConfig")


@pytest.fixture
def my_config(plugin: Path, monkeypatch: pytest.MonkeyPatch) -> type[AlgorithmSettings]:
    """The plugin's config class, imported in this process; the registry is restored after."""
    len(REGISTRY)  # read the entry-point group before the plugin is on the path
    monkeypatch.setattr(REGISTRY, "_entries", dict(REGISTRY._entries))
    monkeypatch.syspath_prepend(str(plugin))
    config: type[AlgorithmSettings] = importlib.import_module("thirdparty_alg").MyConfig
    return config


def assert_gradient_descent(history: pd.DataFrame, n_train: int) -> None:
    """Three rounds of full-gradient descent by 2 workers: every gradient counted, loss down."""
    assert history["round"].tolist() == [0, 1, 2, 3]
    assert history["uploads"].tolist() == [0, 2, 4, 6]
    assert history["grad_evals"].iloc[-1] == 3 * n_train
    assert history["train_loss"].is_monotonic_decreasing
    assert history["train_loss"].iloc[-1] < 0.9 * history["train_loss"].iloc[0]


def test_a_registered_algorithm_runs_through_the_runner(
    my_config: type[AlgorithmSettings],
) -> None:
    register_algorithm("my-alg", my_config)
    config = make_config({"algorithm": "my-alg", "data": "digits", "workers": 2, "rounds": 3})
    prepared = prepare(config)
    result = execute(prepared)
    assert result is not None
    assert_gradient_descent(result.history, int(prepared.shards.sizes.sum()))
    assert [row.name for row in describe_algorithms()][-1] == "my-alg"
    assert [row.setting for row in describe_settings("my-alg")] == ["lr"]
    with pytest.raises(InvalidConfigError, match="'lr' parameter of my-alg must be a finite"):
        build_algorithm("my-alg", {"lr": -1})


def test_a_name_is_registered_once_unless_replaced(my_config: type[AlgorithmSettings]) -> None:
    with pytest.raises(InvalidConfigError) as caught:
        register_algorithm("sgd", my_config)
    assert str(caught.value) == (
        "The 'name' parameter of register_algorithm must be a name not registered yet "
        "(or pass replace=True). Got 'sgd'."
    )
    assert REGISTRY["sgd"].config is BUILT_IN["sgd"][0]
    register_algorithm("sgd", my_config, replace=True)
    assert type(build_algorithm("sgd", {})).__name__ == "MeanGD"
    assert lowcomm.register_algorithm is register_algorithm


@dataclasses.dataclass(frozen=True)
class Undeclared(AlgorithmSettings):
    ABOUT = About("undeclared", "x", up="x", down="x")

    lr: float = 0.1


@dataclasses.dataclass(frozen=True)
class BadDefault(AlgorithmSettings):
    ABOUT = About("bad-default", "x", up="x", down="x")

    lr: float = setting(0.0, POSITIVE, "step size")


@dataclasses.dataclass(frozen=True)
class BadSwitch(AlgorithmSettings):
    ABOUT = About("bad-switch", "x", up="x", down="x", asynchronous=When("nope", True))

    lr: float = setting(0.1, POSITIVE, "step size")


@dataclasses.dataclass(frozen=True)
class NoBuild(AlgorithmSettings):
    ABOUT = About("no-build", "x", up="x", down="x")


class NotADataclass(AlgorithmSettings):
    ABOUT = About("plain", "x", up="x", down="x")


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        ("a b", NoBuild, "'name' parameter of register_algorithm must be a name of letters"),
        ("x", NotADataclass, "'config_class' .* must be a dataclass subclassing lowcomm's"),
        ("x", dict, "'config_class' .* must be a dataclass subclassing lowcomm's"),
        ("x", Undeclared, r"fields are all declared with setting\(\) \(not 'lr'\)"),
        ("x", BadDefault, r"defaults they allow \('lr' must be a finite number > 0\)"),
        ("x", BadSwitch, "When names one of its settings"),
        ("x", NoBuild, r"'factory' parameter of register_algorithm\('x'\) must be a config class"),
    ],
)
def test_malformed_registrations_are_refused(name: str, config: Any, message: str) -> None:
    fresh = Registry({}, group=None)
    with pytest.raises(InvalidConfigError, match=message):
        fresh.register(name, config)
    assert len(fresh) == 0


def test_the_entry_point_group_is_read_lazily_once(
    plugin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []

    def counted(group: str) -> Any:
        reads.append(group)
        return importlib.metadata.entry_points(group=group)

    monkeypatch.setattr(registry, "entry_points", counted)
    found = Registry(BUILT_IN)
    monkeypatch.syspath_prepend(str(plugin))  # installed after the registry was made
    assert reads == []
    assert list(found)[-1] == "my-alg"
    assert found["my-alg"].config.__name__ == "MyConfig"
    assert "my-alg" in found and len(found) == len(BUILT_IN) + 1
    assert reads == ["lowcomm.algorithms"]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("broken = no_such_module:Config", "ModuleNotFoundError: No module named 'no_such_module'"),
        ("engine = thirdparty_alg:MeanGD", "must be a dataclass subclassing lowcomm's"),
        ("sgd = thirdparty_alg:MyConfig", "must be a name not registered yet"),
    ],
)
def test_a_broken_entry_point_is_one_clear_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str, problem: str
) -> None:
    monkeypatch.syspath_prepend(str(installed(tmp_path, entry)))
    monkeypatch.delitem(sys.modules, "thirdparty_alg", raising=False)
    found = Registry(BUILT_IN)
    for _ in range(2):  # raised on every read, not only the first
        with pytest.raises(EntryPointError) as caught:
            list(found)
        message = str(caught.value)
        assert message.startswith(
            f"The algorithm entry point '{entry}' of group lowcomm.algorithms (from the "
            "installed package thirdparty_alg 0.1) cannot be used: "
        )
        assert problem in message


def test_the_cli_runs_an_algorithm_of_an_installed_package(plugin: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = lowcomm_cli(*RUN, "--algorithm", "my-alg", "--set", "lr=0.5", "--out", out, path=plugin)
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["algorithm"] == "my-alg"
    assert_gradient_descent(pd.read_csv(out / "history.csv"), meta["data"]["n_train"])


def test_the_cli_names_a_broken_entry_point_without_a_traceback(tmp_path: Path) -> None:
    site = installed(tmp_path / "site", "my-alg = thirdparty_alg:Missing")
    done = lowcomm_cli(*RUN, "--algorithm", "my-alg", "--out", tmp_path / "run", path=site)
    assert done.returncode == 2
    assert done.stderr.startswith(
        "error: The algorithm entry point 'my-alg = thirdparty_alg:Missing' of group "
        "lowcomm.algorithms (from the installed package thirdparty_alg 0.1) cannot be used: "
        "AttributeError"
    )
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "run").exists()
