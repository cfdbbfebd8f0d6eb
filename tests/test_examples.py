"""Every example in examples/ runs and does what its docstring says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run_example(*command: str | Path, **env: str) -> str:
    """Run an example from the repository root with the test's Python first on PATH."""
    path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run(
        [str(part) for part in command],
        cwd=ROOT,
        env={**os.environ, "PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_own_model_example_learns_and_sends_less() -> None:
    output = run_example(sys.executable, "examples/own_model.py")
    found = re.search(r"test accuracy ([\d.]+)\nuploads ([\d,]+) of ([\d,]+)", output)
    assert found is not None, output
    accuracy, uploads, rounds = (float(g.replace(",", "")) for g in found.groups())
    assert accuracy > 0.85
    assert uploads < rounds, "the lazy trigger skips some uploads"


@pytest.mark.slow
def test_own_csv_example_trains_the_factory_model_on_the_csv(tmp_path: Path) -> None:
    run_example("bash", "examples/own_csv.sh", OUT=str(tmp_path / "run"))
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["test_metric"].iloc[-1] > 0.95
    assert history["train_loss"].iloc[-1] < 0.2 * history["train_loss"].iloc[0]


@pytest.mark.slow
def test_own_algorithm_example_registers_signsgd_from_outside_the_package() -> None:
    output = run_example(sys.executable, "examples/own_algorithm.py")
    lines = re.findall(r"(\w+): train loss ([\d.]+), (\d+) kB up", output)
    found = {name: (float(loss), int(kb)) for name, loss, kb in lines}
    (sgd_loss, sgd_kb), (sign_loss, sign_kb) = found["sgd"], found["signsgd"]
    assert sign_kb * 32 == sgd_kb, "one bit per coordinate instead of a float32"
    assert sign_loss < 0.5 and sgd_loss < 0.5
