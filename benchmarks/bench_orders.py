"""Cost of CD-GraB's order server: sign decisions per second, and overhead per epoch vs D-RR.

Two measurements, on one thread (``OMP/OPENBLAS/MKL_NUM_THREADS=1`` before NumPy is imported,
``torch.set_num_threads(1)``):

* **Sign decisions per second** of the coordinated server, for d in {16, 1000, 61706 (LeNet)}
  and m in {4, 16}: (a) the offline ``coordinated_pair_balance`` over one epoch of fixed random
  gradients ``[m, n, d]`` (n per worker, capped so the array stays near 200 MB), and (b) the
  online ``balance_pairs(coordinated=True)`` as ``sgd`` calls it, one pair per worker per call
  (b = 1 or 2), placing the pairs. One decision = one pair's sign for one worker: one inner
  product and one update of the running sum, both of length d.
* **Time per epoch** of ``sgd`` on the same problem, through the simulate engine
  (``make_config`` / ``prepare`` / ``execute``, one epoch, evaluations at its start and end
  included), for the configurations in ``VARIANTS``: ``order`` = ``d-rr``, ``cd-grab`` and
  ``cd-grab-signs`` (projection k = 16) with example units, and ``d-rr`` and ``cd-grab`` with
  minibatch units (``unit="minibatch"``: each step computes only its minibatch's mean gradient).
  Problems: L2 logistic regression on synthetic data (d = 32 and d = 1000, b = 1 and b = 8) and,
  when ``../shared/datasets/mnist`` exists and without ``--quick``, LeNet on MNIST (m = 8,
  b = 8). At b = 1 a minibatch is one example and the two modes run the same algorithm, so the
  minibatch configurations are measured only at b > 1 (shown as "=" at b = 1). The overhead is
  the ratio of medians to example-mode D-RR's time (and, for minibatch CD-GraB, to minibatch
  D-RR's).

Each timing is repeated (default 3, interleaved across the configurations measured on a
problem, the first one rotating); tables show the median (and the minimum). Usage:
``python benchmarks/bench_orders.py [--quick] [--repeats R]``.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lowcomm.experiments.config import make_config
from lowcomm.experiments.runner import execute, prepare
from lowcomm.ordering.balance import coordinated_pair_balance
from lowcomm.ordering.orders import balance_pairs, fresh_pair_balancer

DIMS = (16, 1000, 61706)
WORKERS = (4, 16)
MAX_BYTES = 200e6
MAX_PER_WORKER = 2048
MNIST = Path("../shared/datasets/mnist")
PROJECTION = 16


def per_worker(m: int, d: int) -> int:
    """Examples per worker for the decision benchmark: even, the array under MAX_BYTES."""
    n = min(MAX_PER_WORKER, int(MAX_BYTES // (8 * m * d)))
    return n // 2 * 2


def offline(grads: np.ndarray, order: np.ndarray) -> Callable[[], object]:
    """One epoch of the offline coordinated server."""
    return lambda: coordinated_pair_balance(order, grads)


def online(grads: np.ndarray, order: np.ndarray) -> Callable[[], object]:
    """The online server fed one pair per worker per call, as ``sgd`` does at b = 1 or 2."""
    m, n, d = grads.shape
    deltas = torch.from_numpy(grads[:, 0::2] - grads[:, 1::2])
    ids = torch.from_numpy(order).reshape(m, -1, 2)

    def run() -> None:
        state = fresh_pair_balancer(m, 1, n, d, torch.float64)
        for pair in range(n // 2):
            state, _ = balance_pairs(
                state, ids[:, pair : pair + 1], deltas[:, pair : pair + 1], coordinated=True
            )

    return run


def seconds(run: Callable[[], object], repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls (after one warm-up call)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def decision_rows(repeats: int) -> list[str]:
    """Markdown rows: decisions per second of both servers for every d and m."""
    rows = []
    rng = np.random.default_rng(0)
    for d in DIMS:
        for m in WORKERS:
            n = per_worker(m, d)
            grads = rng.standard_normal((m, n, d))
            order = np.tile(np.arange(n), (m, 1))
            decisions = m * n // 2
            cells = []
            for make in (offline, online):
                times = seconds(make(grads, order), repeats)
                cells.append(rate(decisions, times))
            rows.append(f"| {d:,} | {m} | {n:,} | {decisions:,} | {' | '.join(cells)} |")
    return rows


def rate(decisions: int, times: list[float]) -> str:
    """Decisions per second (median; best in parentheses) and µs per decision (median)."""
    median, best = statistics.median(times), min(times)
    return f"{decisions / median:,.0f} ({decisions / best:,.0f}) | {1e6 * median / decisions:.2f}"


@dataclass(frozen=True)
class Workload:
    """A problem for the per-epoch comparison."""

    name: str
    data: str
    model: str
    workers: int
    batch_size: int
    lr: float
    dtype: str
    momentum: float = 0.0


@dataclass(frozen=True)
class Variant:
    """One configuration of ``sgd`` with an order: a column of the per-epoch table."""

    label: str
    order: str
    unit: str = "example"
    projection: int = 0

    def measured_on(self, work: Workload) -> bool:
        """Whether it differs from its example-mode twin on ``work`` (minibatch units: b > 1)."""
        return self.unit == "example" or work.batch_size > 1


D_RR = Variant("D-RR", "d-rr")
CD_GRAB = Variant("CD-GraB", "cd-grab")
SIGNS = Variant(f"CD-GraB signs k = {PROJECTION}", "cd-grab-signs", projection=PROJECTION)
D_RR_MINIBATCH = Variant("D-RR minibatch", "d-rr", unit="minibatch")
CD_GRAB_MINIBATCH = Variant("CD-GraB minibatch", "cd-grab", unit="minibatch")
VARIANTS = (D_RR, CD_GRAB, SIGNS, D_RR_MINIBATCH, CD_GRAB_MINIBATCH)
# (column label, numerator, denominator): ratios of median seconds per epoch
RATIOS = (
    ("CD-GraB / D-RR", CD_GRAB, D_RR),
    ("signs / D-RR", SIGNS, D_RR),
    ("D-RR mb / D-RR", D_RR_MINIBATCH, D_RR),
    ("CD-GraB mb / D-RR", CD_GRAB_MINIBATCH, D_RR),
    ("CD-GraB mb / D-RR mb", CD_GRAB_MINIBATCH, D_RR_MINIBATCH),
)
SAME = "="  # a minibatch configuration at b = 1: the same algorithm as its example-mode twin


def workloads(quick: bool) -> list[Workload]:
    """Logistic regression at two widths and b in {1, 8}; LeNet on MNIST when present."""
    logistic = (
        ("logistic, d = 32", "synthetic-logistic:5461,32", 0.08),
        ("logistic, d = 1000", "synthetic-logistic:2731,1000", 0.003),
    )
    found = [
        Workload(name, data, "logistic", m, b, lr, "float64")
        for name, data, lr in logistic
        for b in (1, 8)
        for m in WORKERS
    ]
    if MNIST.is_dir() and not quick:
        found.append(
            Workload("LeNet, d = 61,706", f"mnist:{MNIST}", "lenet", 8, 8, 0.05, "float32", 0.9)
        )
    return found


def epoch_run(work: Workload, variant: Variant) -> tuple[Callable[[], object], int]:
    """One epoch of ``sgd`` configured by ``variant`` on ``work`` (prepared once), and its steps."""
    options: dict[str, object] = {
        "lr": work.lr,
        "batch_size": work.batch_size,
        "momentum": work.momentum,
        "unit": variant.unit,
        "projection": variant.projection,
    }
    config = make_config(
        {
            "algorithm": "sgd",
            "options": options,
            "order": variant.order,
            "data": work.data,
            "model": work.model,
            "workers": work.workers,
            "epochs": 1,
            "dtype": work.dtype,
            "eval_every": 10**9,
        }
    )
    prepared = prepare(config)
    return (lambda: execute(prepared)), prepared.rounds


def interleaved(
    runs: dict[Variant, Callable[[], object]], repeats: int
) -> dict[Variant, list[float]]:
    """Wall times of ``repeats`` rounds over ``runs``, after one warm-up call of each.

    Round i starts at the i-th run (mod their number), so that no run always goes first.
    """
    for run in runs.values():
        run()
    order = list(runs)
    times: dict[Variant, list[float]] = {variant: [] for variant in order}
    for i in range(repeats):
        shift = i % len(order)
        for variant in order[shift:] + order[:shift]:
            start = time.perf_counter()
            runs[variant]()
            times[variant].append(time.perf_counter() - start)
    return times


def epoch_rows(quick: bool, repeats: int) -> list[str]:
    """Markdown rows: seconds per epoch of each variant and the ratios in ``RATIOS``."""
    rows = []
    for work in workloads(quick):
        prepared = {v: epoch_run(work, v) for v in VARIANTS if v.measured_on(work)}
        times = interleaved({v: run for v, (run, _) in prepared.items()}, repeats)
        medians = {v: statistics.median(t) for v, t in times.items()}
        cells = [
            f"{medians[v]:.3f} ({min(times[v]):.3f})" if v in times else SAME for v in VARIANTS
        ]
        ratios = [
            f"{medians[top] / medians[bottom]:.2f}x" if top in times else SAME
            for _, top, bottom in RATIOS
        ]
        rows.append(
            f"| {work.name} | {work.workers} | {work.batch_size} | {prepared[D_RR][1]} | "
            f"{' | '.join(cells)} | {' | '.join(ratios)} |"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run both benchmarks and print their markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="no LeNet epoch; 2 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)
    torch.set_num_threads(1)
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, repeats {repeats}\n"
    )
    print("Sign decisions per second: median (best); µs per decision (median)\n")
    print(
        "| d | m | n per worker | decisions per epoch | offline `coordinated_pair_balance` "
        "| µs | online `balance_pairs` | µs |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(decision_rows(repeats)))
    print(
        "\nSeconds per epoch of `sgd` (simulate engine): median (best); ratios of medians; "
        f"'{SAME}': at b = 1 the same algorithm as example mode, not measured\n"
    )
    labels = [v.label for v in VARIANTS] + [label for label, _, _ in RATIOS]
    print(f"| problem | m | b | steps per epoch | {' | '.join(labels)} |")
    print("|---" * (4 + len(labels)) + "|")
    print("\n".join(epoch_rows(args.quick, repeats)))


if __name__ == "__main__":
    main()
