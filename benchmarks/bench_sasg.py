"""Time per iteration of SASG and its baselines in the SASG reproduction's setting (simulate).

The runs of ``lowcomm reproduce sasg``: the 784-512-10 MLP (407,050 parameters), 10 workers,
batch 10 each, step 0.005, no weight decay; LASG and SASG with D = 10 and c = 1/2, top-k with
memory and SASG at density 1% per tensor; one torch thread. The data are MNIST-shaped random
numbers (10 x 800 training examples) unless ``--data`` names a data set, e.g.
``mnist:../shared/datasets/mnist``, the study's (real gradients: 60% of the first layer's entries
are 0). The methods run in turn, ``--repeats`` times; a run's time is its training loop's
(the history's ``wall_time``, evaluation excluded) divided by its iterations.

    python benchmarks/bench_sasg.py [--data SPEC] [--rounds N] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import numpy as np
import torch

import lowcomm

WORKERS, PER_WORKER, FEATURES, CLASSES = 10, 800, 784, 10
COMMON = {"lr": 0.005, "batch_size": 10, "sampling": "reshuffle"}
LAZY = {"window": 10, "threshold": 0.5, "reference": "last-upload"}
METHODS: dict[str, dict[str, Any]] = {
    "sgd": COMMON | {"reduce": "sum", "momentum": 0.0},
    "topk-ef": COMMON | {"density": 0.01},
    "lasg": COMMON | LAZY,
    "sasg": COMMON | {"density": 0.01} | LAZY,
}


def random_data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """MNIST-shaped uniform features and labels: the training and the test set."""
    rng = np.random.default_rng(0)
    n = WORKERS * PER_WORKER
    X = rng.random((n + 100, FEATURES), dtype=np.float32)
    y = rng.integers(0, CLASSES, n + 100)
    return (X[:n], y[:n]), (X[n:], y[n:])


def timed(name: str, data: Any, test: Any, rounds: int) -> tuple[float, float]:
    """Seconds per iteration of the training loop, and gradient evaluations per iteration."""
    result = lowcomm.run(
        name,
        model="mlp",
        hidden=(512,),
        l2=0.0,
        data=data,
        test=test,
        workers=WORKERS,
        partition="iid",
        rounds=rounds,
        eval_every=rounds,
        settings=METHODS[name],
        seed=0,
    )
    assert result is not None
    last = result.history.iloc[-1]
    return float(last["wall_time"]) / rounds, float(last["grad_evals"]) / rounds


def main() -> None:
    """Print a markdown table of milliseconds per iteration (median of the repeats)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", help="a data set spec (default: MNIST-shaped random data)")
    parser.add_argument("--rounds", type=int, default=60, help="iterations per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data, test = (args.data, None) if args.data else random_data()
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    evals: dict[str, float] = {}
    for _ in range(args.repeats):
        for name in METHODS:
            seconds, evals[name] = timed(name, data, test, args.rounds)
            times[name].append(seconds)
    base = statistics.median(times["sgd"])
    print(
        f"784-512-10 MLP on {args.data or 'random data'}, {WORKERS} workers x batch 10, "
        f"{args.rounds} iterations (10 warm-up), median of {args.repeats}, one thread"
    )
    print("| method | ms / iteration | vs sgd | gradient evaluations / iteration |")
    print("|---|---|---|---|")
    for name in METHODS:
        ms = statistics.median(times[name]) * 1e3
        print(f"| {name} | {ms:.1f} | {ms / (base * 1e3):.2f}x | {evals[name]:.0f} |")


if __name__ == "__main__":
    main()
