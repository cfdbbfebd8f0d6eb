"""The command line starts fast: help and listings import none of the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("pandas", "matplotlib", "sklearn", "lowcomm.experiments.study")
REPRODUCTIONS = "lowcomm.experiments.reproduce."

PROBE = """
import json, sys
from lowcomm.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def imported(*args: str) -> set[str]:
    """The modules loaded by ``lowcomm ARGS`` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["algorithms"]])
def test_help_and_listings_import_no_heavy_library(args: list[str]) -> None:
    modules = imported(*args)
    assert "lowcomm.cli" in modules
    assert not [m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY]
    assert not [m for m in modules if m.startswith(REPRODUCTIONS)]


def test_a_command_that_runs_still_finds_what_it_needs() -> None:
    assert "pandas" in imported("plot", "/nonexistent-folder")
