"""Failures a user meets before any work: an output folder that cannot be written."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lowcomm.cli import app
from lowcomm.core.errors import DataError
from lowcomm.experiments.execution import check_out

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
