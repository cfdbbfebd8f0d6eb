"""Peak memory of training on a wide sparse LIBSVM file: it must stay sparse end to end.

Writes a synthetic LIBSVM file (default 20,000 rows, 2,000,000 features, 50 non-zeros per row,
binary labels from a planted sparse model) to a temporary folder, then runs, in a fresh
subprocess, ``python -m lowcomm run --data libsvm:FILE,n_features=D --model logistic
--algorithm sgd --workers 8 --rounds 5`` (simulate engine, float32, evaluation every round) and
reports the child's peak resident memory (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``:
the child is this script's only one), its wall time, the training loop's own wall time from
``history.csv`` and the losses. A dense float32 copy of the features would take rows x features
x 4 bytes (160 GB by default); the target is a peak under 1.5 GB. The child runs on one thread
(``OMP_NUM_THREADS=1``).

Usage: ``python benchmarks/bench_sparse.py [--rows N] [--features D] [--nnz K] [--workers W]
[--rounds R]``
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

TARGET_GB = 1.5


def write_libsvm(path: Path, rows: int, features: int, nnz: int, seed: int = 0) -> None:
    """``rows`` lines of ``nnz`` distinct random features; label ±1 from a planted model."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=features).astype(np.float32)
    with path.open("w") as out:
        for _ in range(rows):
            index = np.sort(rng.choice(features, size=nnz, replace=False))
            value = rng.normal(size=nnz).astype(np.float32)
            positive = teacher[index] @ value + rng.logistic() > 0
            pairs = " ".join(f"{i + 1}:{v:.4g}" for i, v in zip(index, value, strict=True))
            out.write(f"{'+1' if positive else '-1'} {pairs}\n")


def run_child(data: Path, features: int, workers: int, rounds: int, out: Path) -> float:
    """Train in a fresh interpreter; returns its wall time in seconds."""
    command = [
        sys.executable, "-m", "lowcomm", "run",
        "--data", f"libsvm:{data},n_features={features}",
        "--model", "logistic", "--algorithm", "sgd", "--workers", str(workers),
        "--rounds", str(rounds), "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Write the file, train on it in a subprocess, print a markdown table row."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=2_000_000)
    parser.add_argument("--nnz", type=int, default=50)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "wide.svm"
        start = time.perf_counter()
        write_libsvm(data, args.rows, args.features, args.nnz)
        written = time.perf_counter() - start
        size = data.stat().st_size
        wall = run_child(data, args.features, args.workers, args.rounds, Path(folder) / "run")
        history = pd.read_csv(Path(folder) / "run" / "history.csv")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
    dense = args.rows * args.features * 4 / 1e9
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; file {size / 1e6:.0f} MB written in {written:.0f} s\n"
    )
    print(
        "| rows | features | non-zeros/row | workers | rounds | dense float32 | peak RSS "
        "| target | child wall | training loop | train loss round 0 → last |"
    )
    print("|---" * 11 + "|")
    losses = history["train_loss"]
    print(
        f"| {args.rows:,} | {args.features:,} | {args.nnz} | {args.workers} | {args.rounds} "
        f"| {dense:,.0f} GB | {peak:.2f} GB | {'met' if peak < TARGET_GB else 'MISSED'} "
        f"(< {TARGET_GB} GB) | {wall:.1f} s | {history['wall_time'].iloc[-1]:.2f} s "
        f"| {losses.iloc[0]:.4f} → {losses.iloc[-1]:.4f} |"
    )


if __name__ == "__main__":
    main()
