"""Time per iteration of SASG and its baselines on the 784-512-10 network (simulate engine).

SASG and LASG pay a second mini-batch gradient per worker after the warm-up (the LASG-WK2 test)
and SASG a per-tensor top-k; this measures what that costs against plain SGD, in the same process,
interleaved, on MNIST-shaped random data (10 workers x 800 examples, batch 10 per worker).

    python benchmarks/bench_sasg.py [--rounds N] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from lowcomm.algorithms.registry import build_algorithm
from lowcomm.core.clock import ClockModel
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Dataset, Shards, TrainTest
from lowcomm.engines.evaluation import Evaluator
from lowcomm.engines.session import RunOptions
from lowcomm.engines.simulate import Simulation
from lowcomm.problems.torch_model import TorchModel, mlp

WORKERS, PER_WORKER, FEATURES, CLASSES = 10, 800, 784, 10
METHODS = {
    "sgd": {"lr": 0.005, "batch_size": 10, "reduce": "sum", "sampling": "reshuffle"},
    "topk-ef": {},
    "lasg": {},
    "sasg": {},
}


def simulation(name: str, rounds: int) -> Simulation:
    """A run of ``name`` with the paper's settings on random MNIST-shaped data."""
    rng = np.random.default_rng(0)
    n = WORKERS * PER_WORKER
    X = rng.random((n + 100, FEATURES), dtype=np.float32)
    y = rng.integers(0, CLASSES, n + 100)
    train, test = Dataset("random", X[:n], y[:n], CLASSES), Dataset("random", X[n:], y[n:], CLASSES)
    problem = TorchModel(mlp(FEATURES, (512,), CLASSES))
    parts = np.split(np.arange(n), WORKERS)
    return Simulation(
        build_algorithm(name, METHODS[name]),
        problem,
        Shards.build(train, parts, torch.float32),
        Evaluator.build(problem, TrainTest(train, test)),
        Streams(0),
        ClockModel(),
        RunOptions(rounds=rounds, eval_every=rounds),
    )


def main() -> None:
    """Print a markdown table of milliseconds per iteration (median of the repeats)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=60, help="iterations per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = {name: simulation(name, args.rounds) for name in METHODS}
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    evals: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, sim in runs.items():
            start = time.perf_counter()
            result = sim.run()
            times[name].append((time.perf_counter() - start) / args.rounds)
            evals[name] = result.ledger.total("grad_evals") / args.rounds
    base = statistics.median(times["sgd"])
    print(
        f"784-512-10 MLP, {WORKERS} workers x batch 10, {args.rounds} iterations (10 warm-up), "
        f"median of {args.repeats}, one thread"
    )
    print("| method | ms / iteration | vs sgd | gradient evaluations / iteration |")
    print("|---|---|---|---|")
    for name in METHODS:
        ms = statistics.median(times[name]) * 1e3
        print(f"| {name} | {ms:.1f} | {ms / (base * 1e3):.2f}x | {evals[name]:.0f} |")


if __name__ == "__main__":
    main()
