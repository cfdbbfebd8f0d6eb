"""Failures a user meets before any work: an output folder that cannot be written."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lowcomm.cli import app
from lowcomm.core.errors import DataError, InvalidConfigError
from lowcomm.experiments.config import make_config
from lowcomm.experiments.run_folder import check_out
from lowcomm.experiments.runner import prepare

UNWRITABLE = Path("/proc/lowcomm-unwritable/run")  # procfs takes no new files, even from root


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--data", "digits", "--rounds", "1000"],
        ["compare", "--algorithms", "sgd,gd", "--data", "digits", "--rounds", "1000"],
        ["reproduce", "sasg", "--quick"],
    ],
)
def test_an_unwritable_out_fails_at_once_with_one_line(args: list[str]) -> None:
    start = time.perf_counter()
    result = CliRunner().invoke(app, [*args, "--out", str(UNWRITABLE)])
    assert result.exit_code == 2, result.output
    assert time.perf_counter() - start < 10
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {UNWRITABLE}: cannot be written")


def test_a_writable_out_is_probed_without_leaving_anything(tmp_path: Path) -> None:
    check_out(tmp_path / "new" / "run")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="exists and is not a folder"):
        check_out(tmp_path / "file")


def test_single_class_data_is_refused_unless_pca_is_asked(tmp_path: Path) -> None:
    path = tmp_path / "one.svm"
    path.write_text("1 1:0.5 2:1\n1 1:0.1 3:2\n1 2:0.3\n1 1:1 2:1 3:1\n")
    common = ["run", "--data", f"libsvm:{path}", "--workers", "2", "--rounds", "2", "-q"]
    refused = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "a")])
    assert refused.exit_code == 2
    assert "two or more classes (for streaming PCA give --model pca)" in refused.stderr
    assert "one class only" in refused.stderr and not (tmp_path / "a").exists()
    asked = CliRunner().invoke(app, [*common, "--model", "pca", "--out", str(tmp_path / "b")])
    assert asked.exit_code == 0, asked.output
    assert "sin2" in (tmp_path / "b" / "run.json").read_text()


def test_a_lag_cap_for_a_synchronous_algorithm_is_refused(tmp_path: Path) -> None:
    args = ["run", "--data", "digits", "--algorithm", "sgd", "--lag-cap", "2", "--out"]
    result = CliRunner().invoke(app, [*args, str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert "'lag_cap'" in result.stderr and len(result.stderr.splitlines()) == 1


def test_speeds_need_one_number_per_worker() -> None:
    config = make_config({"data": "digits", "algorithm": "async-msgd", "workers": 3})
    with pytest.raises(InvalidConfigError, match="3 numbers, one per worker"):
        prepare(config.model_copy(update={"speeds": (1.0, 2.0)}))
    assert prepare(config.model_copy(update={"speeds": (1.0, 2.0, 4.0)})).config.workers == 3
