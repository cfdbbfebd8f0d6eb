"""Cost of asynchronous updates and sequential steps, beside plain torch loops (issue 15, item 5).

Sections (all float64 L2 logistic regression, d = 50, equal shards of 100 examples, seed 0):

* (a) ``hogwild-ib`` sequential single-example steps: one worker, ``sample_sizes=const:S``,
  ``step=const:0.05``; µs per local step.
* (b) asynchronous ``sgd`` (batch 4, lr 0.1) and (c) ``async-msgd`` (batch 4, lr 0.05, momentum
  0.5): 10 workers with distinct speeds, so each update handles one worker; µs per update.
* (d) one ``hogwild-ib`` update (``const:1``, distinct speeds) with 10 and with 10,000 workers:
  the schedule's ``step`` timed after 50 warm-up updates (start-up and evaluations excluded).
* (e) ``lowcomm --help`` beside ``python -c "import torch"`` (``bench_startup.seconds``).

The plain loops do the engine's arithmetic with the engine's draws, in its order: the updates'
workers are read from the engine run's ledger and the batch positions are drawn beforehand with
``Streams(0).integers("batch", [w], k, b, sizes)``, as ``LocalData.sample`` draws them for
worker w's k-th computation. A correctness gate runs each contender once first and aborts unless
the final models agree to ``max|x - x_lowcomm| <= 1e-10 * max|x_lowcomm|``. The lowcomm time is
the whole ``run()`` (start-up computations and the two evaluations included). Repetitions are
interleaved (the first contender alternates); medians (minima in parentheses). One thread.

Usage: ``python benchmarks/bench_async.py [--quick] [--repeats R]``
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from bench_startup import COMMANDS, seconds

from lowcomm.algorithms.async_msgd import AsyncMSGD, AsyncMSGDConfig
from lowcomm.algorithms.base import Algorithm
from lowcomm.algorithms.hogwild_ib import HogwildIB, HogwildIBConfig
from lowcomm.algorithms.sgd import SGD, SGDConfig
from lowcomm.core.clock import ClockModel, ComputeModel
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Dataset, Shards, TrainTest
from lowcomm.engines.asynchrony import event_order
from lowcomm.engines.evaluation import Evaluator
from lowcomm.engines.session import RunOptions
from lowcomm.engines.simulate import Simulation
from lowcomm.problems.logistic import LogisticRegression

D, PER_WORKER, L2, RTOL = 50, 100, 1e-3, 1e-10
Run = Callable[[], np.ndarray]


@dataclass
class Problem:
    """Data of ``workers`` equal shards, the engine's problem, and a distinct speed per worker."""

    workers: int

    def __post_init__(self) -> None:
        n, rng = self.workers * PER_WORKER, np.random.default_rng(0)
        X = rng.standard_normal((n + 200, D)) / np.sqrt(D)
        y = (X @ rng.standard_normal(D) + rng.logistic(size=n + 200) > 0).astype(np.int64)
        train, test = Dataset("synthetic", X[:n], y[:n], 2), Dataset("synthetic", X[n:], y[n:], 2)
        self.problem = LogisticRegression(D, L2, dtype=torch.float64)
        parts = np.split(np.arange(n), self.workers)
        self.shards = Shards.build(train, parts, torch.float64)
        self.evaluator = Evaluator.build(self.problem, TrainTest(train, test))
        self.A = self.shards.X  # [w, n_w, d]
        self.s = (2 * self.shards.y - 1).to(torch.float64)  # [w, n_w]
        speeds = tuple(np.random.default_rng(1).uniform(0.5, 2.0, self.workers).tolist())
        self.clock = ClockModel(compute=ComputeModel(seconds_per_grad=1.0, speeds=speeds))

    def simulation(self, algorithm: Algorithm, updates: int, clock: ClockModel) -> Simulation:
        """A run of ``updates`` aggregator updates, evaluated at its start and end only."""
        options = RunOptions(rounds=updates, eval_every=updates)
        streams = Streams(0)
        return Simulation(
            algorithm, self.problem, self.shards, self.evaluator, streams, clock, options
        )

    def positions(self, worker: int, computations: int, batch: int) -> list[torch.Tensor]:
        """The batch positions of the worker's first ``computations`` computations."""
        ids, sizes = torch.tensor([worker]), self.shards.sizes[worker : worker + 1]
        draw = Streams(0).integers
        return [draw("batch", ids, k, batch, sizes)[0] for k in range(computations)]

    def grad(self, x: torch.Tensor, worker: int, index: torch.Tensor) -> torch.Tensor:
        """Mean logistic gradient plus l2 x on the worker's examples ``index``."""
        A, s = self.A[worker, index], self.s[worker, index]
        coeff = s * torch.sigmoid(-s * (A @ x)) / index.shape[0]
        return L2 * x - A.T @ coeff


def sequential_steps(p: Problem, rounds: int, steps: int) -> dict[str, Run]:
    """(a) hogwild-ib, one worker, ``steps`` single-example SGD steps per round."""
    config = HogwildIBConfig(sample_sizes=f"const:{steps}", step="const:0.05")
    sim = p.simulation(HogwildIB(config), rounds, ClockModel())
    draws = p.positions(0, rounds, steps)

    def plain() -> np.ndarray:
        v = torch.zeros(D, dtype=torch.float64)
        for index in draws:
            w = v
            for j in range(steps):
                w = w - 0.05 * p.grad(w, 0, index[j : j + 1])
            v = v - (v - w)
        return v.numpy()

    return {"lowcomm": lambda: sim.run().model.numpy(), "plain torch loop": plain}


def updates(p: Problem, name: str, count: int) -> dict[str, Run]:
    """(b) asynchronous sgd or (c) async-msgd, one worker per update, in the engine's order."""
    if name == "sgd":
        algorithm: Algorithm = SGD(SGDConfig(lr=0.1, batch_size=4, asynchronous=True))
    else:
        algorithm = AsyncMSGD(AsyncMSGDConfig(lr=0.05, momentum=0.5, batch_size=4))
    sim = p.simulation(algorithm, count, p.clock)
    order = [update[0] for update in event_order(sim.run().ledger.records())]
    assert len(order) == count, "every update handles one worker"
    draws = {w: p.positions(w, order.count(w), 4) for w in set(order)}

    def plain() -> np.ndarray:
        v = previous = torch.zeros(D, dtype=torch.float64)
        received, taken = {w: v for w in draws}, dict.fromkeys(draws, 0)
        for w in order:
            g = p.grad(received[w], w, draws[w][taken[w]])
            taken[w] += 1
            if name == "sgd":
                v = v - 0.1 * g
            else:
                v, previous = v + 0.5 * (v - previous) - 0.05 * g, v
            received[w] = v
        return v.numpy()

    return {"lowcomm": lambda: sim.run().model.numpy(), "plain torch loop": plain}


def interleaved(runs: dict[str, Run], repeats: int) -> dict[str, list[float]]:
    """Gate the contenders against lowcomm's model, then time them, alternating the first."""
    first = {name: run() for name, run in runs.items()}
    ref = first["lowcomm"]
    for name, x in first.items():
        error = float(np.max(np.abs(x - ref)) / max(float(np.max(np.abs(ref))), 1e-30))
        if not error <= RTOL:
            sys.exit(f"correctness gate failed: {name} differs by {error:.2g} > {RTOL}")
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names[r % 2 :] + names[: r % 2]:
            gc.collect()
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return times


def update_seconds(workers: int, warm: int, timed: int, repeats: int) -> list[float]:
    """(d) seconds per hogwild-ib update, ``timed`` updates after ``warm``, per repeat.

    Steps the engine's schedule directly (``Simulation._async``), so that the start-up, where
    every worker computes once, is not in the time.
    """
    p = Problem(workers)
    sim = p.simulation(HogwildIB(HogwildIBConfig(sample_sizes="const:1")), 1, p.clock)
    state = sim.start()
    loop = sim._async(state)
    for _ in range(warm):
        loop.step(state)
    out = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        for _ in range(timed):
            loop.step(state)
        out.append((time.perf_counter() - start) / timed)
    return out


def row(label: str, times: dict[str, list[float]], per: int, unit: str) -> str:
    """A table row: µs per ``unit`` of each contender and their ratio."""
    med = {n: statistics.median(t) / per * 1e6 for n, t in times.items()}
    low = {n: min(t) / per * 1e6 for n, t in times.items()}
    cells = [f"{med[n]:.1f} ({low[n]:.1f})" for n in times]
    ratio = med["lowcomm"] / med["plain torch loop"]
    return f"| {label} | µs per {unit} | {' | '.join(cells)} | {ratio:.2f}x |"


def main() -> None:
    """Print the tables of sections (a) to (e)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 5)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeats, scale = args.repeats or (3 if args.quick else 5), 4 if args.quick else 1
    rounds, steps, count = 400 // scale, 50, 2000 // scale
    print("| section | unit | lowcomm | plain torch loop | lowcomm / plain |")
    print("|---|---|---|---|---|")
    times = interleaved(sequential_steps(Problem(1), rounds, steps), repeats)
    print(row(f"(a) hogwild-ib, {rounds} rounds x {steps} steps", times, rounds * steps, "step"))
    for label, name in (("(b) async sgd", "sgd"), ("(c) async-msgd", "async-msgd")):
        times = interleaved(updates(Problem(10), name, count), repeats)
        print(row(f"{label}, 10 workers, {count} updates", times, count, "update"))
    per = {w: update_seconds(w, 50, 500 // scale, repeats) for w in (10, 10_000)}
    print("\n| workers | µs per hogwild-ib update (median, min) | / 10 workers |")
    print("|---|---|---|")
    for w, t in per.items():
        ratio = statistics.median(t) / statistics.median(per[10])
        print(f"| {w:,} | {statistics.median(t) * 1e6:.0f} ({min(t) * 1e6:.0f}) | {ratio:.2f}x |")
    startup = {name: COMMANDS[name] for name in ('python -c "import torch"', "lowcomm --help")}
    runs: dict[str, list[float]] = {name: [] for name in startup}
    for r in range(repeats):
        for name in list(startup)[r % 2 :] + list(startup)[: r % 2]:
            runs[name].append(seconds(startup[name]))
    print("\n| command | median (s) | min (s) |")
    print("|---|---|---|")
    for name, t in runs.items():
        print(f"| `{name}` | {statistics.median(t):.2f} | {min(t):.2f} |")
    base = statistics.median(runs['python -c "import torch"'])
    print(
        f"\nlowcomm --help / import torch: {statistics.median(runs['lowcomm --help']) / base:.2f}"
    )


if __name__ == "__main__":
    main()
