"""Cost per worker-round of the simulate engine: local SGD on L2 logistic regression.

Three contenders compute the same rounds (same data, same batch indices, float32):

* ``lowcomm``: ``Simulation(...).run()`` with ``eval_every = rounds``. The timing is the whole
  ``run()`` call, nothing subtracted: it includes the ledger, the clock, the keyed RNG draws and
  the two evaluations (round 0 and the last round) that every run makes.
* ``(a) numpy loop``: a plain Python loop over workers; per worker, gather each pre-drawn batch
  and take the L closed-form gradient steps with NumPy on float32 arrays, then average.
* ``(b) torch batched``: all workers at once in torch (gather ``[w, b, d]``, batched matvecs,
  no per-worker loop, batch indices pre-drawn): "the machine's limit" as the issue puts it
  (at 1000 workers its 60 MB batch per step makes it memory-bound; see docs/benchmarks.md).

Before timing, a correctness gate runs each contender once (this is also its warm-up) and aborts
unless the three averaged models agree: ``max|x - x_lowcomm| <= rtol * max|x_lowcomm|``. The
baselines use the very indices ``Streams(seed).integers("batch", workers, round, b, sizes, step)``
that :meth:`lowcomm.algorithms.local_data.LocalData.sample` draws. Then ``repeats`` timed runs of
each contender, interleaved (the starting contender rotates), give the median and the minimum.

Everything runs on one thread: ``OMP/OPENBLAS/MKL_NUM_THREADS=1`` are set before NumPy is
imported, threadpoolctl (if installed) limits the BLAS pools too, and ``torch.set_num_threads(1)``.

Usage: ``python benchmarks/bench_simulate.py [--quick] [--workers 10,100,1000] [--rounds N]
[--repeats R] [--profile]``
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import cProfile
import gc
import io
import math
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from lowcomm.algorithms.local_sgd import LocalSGD, LocalSGDConfig
from lowcomm.core.clock import ClockModel
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Dataset, Shards, TrainTest
from lowcomm.engines.evaluation import Evaluator
from lowcomm.engines.session import RunOptions
from lowcomm.engines.simulate import Simulation
from lowcomm.problems.logistic import LogisticRegression

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - optional
    threadpool_limits = None

CONTENDERS = ("lowcomm", "(a) numpy loop", "(b) torch batched")
TARGET_WORKERS = (100, 1000)
TARGET_VS_NUMPY = 1.0
TARGET_VS_TORCH = 1.5


@dataclass(frozen=True)
class Config:
    """The fixed problem and algorithm settings."""

    features: int = 300
    per_worker: int = 500
    local_steps: int = 5
    batch_size: int = 50
    lr: float = 0.5
    l2: float = 1e-3
    test_examples: int = 1000
    seed: int = 0
    rtol: float = 1e-4


class Case:
    """Data, a ready-to-run simulation and the pre-drawn batches for one worker count."""

    def __init__(self, cfg: Config, workers: int, rounds: int) -> None:
        self.cfg, self.workers, self.rounds = cfg, workers, rounds
        n, d, m = cfg.per_worker * workers, cfg.features, cfg.per_worker
        rng = np.random.default_rng(cfg.seed)
        X = rng.standard_normal((n + cfg.test_examples, d), dtype=np.float32)
        X *= np.float32(1 / math.sqrt(d))
        truth = rng.standard_normal(d, dtype=np.float32) * np.float32(3.0)
        noise = rng.logistic(size=n + cfg.test_examples).astype(np.float32)
        y = (X @ truth + noise > 0).astype(np.int64)
        train = Dataset("synthetic", X[:n], y[:n], 2)  # views, no copies
        test = Dataset("synthetic", X[n:], y[n:], 2)
        self.problem = LogisticRegression(d, cfg.l2, dtype=torch.float32)
        # Equal contiguous shards of m examples, no padding: what Shards.build makes of
        # parts = np.split(np.arange(n), workers), without its float64 staging copy.
        self.shards = Shards(
            torch.from_numpy(train.X).view(workers, m, d),
            torch.from_numpy(train.y).view(workers, m),
            torch.ones(workers, m, dtype=torch.float32),
            torch.full((workers,), m, dtype=torch.int64),
            torch.arange(workers),
            torch.ones(workers, dtype=torch.float64),  # equal shards: every share is 1
        )
        self.evaluator = Evaluator.build(self.problem, TrainTest(train, test))
        self.algorithm = LocalSGD(
            LocalSGDConfig(lr=cfg.lr, batch_size=cfg.batch_size, local_steps=cfg.local_steps)
        )
        self.simulation = Simulation(
            self.algorithm,
            self.problem,
            self.shards,
            self.evaluator,
            Streams(cfg.seed),
            ClockModel(),
            RunOptions(rounds=rounds, eval_every=rounds),
        )
        # Baselines' inputs, prepared outside the timings: signs s = 2y - 1 and the batches.
        self.X = self.shards.X.numpy()  # [w, n_w, d] float32, shared with the shards
        self.signs = (2 * self.shards.y - 1).to(torch.float32)  # [w, n_w]
        self.signs_np = self.signs.numpy()
        self.index = self._draw()  # [rounds, steps, w, b] int64
        offsets = torch.arange(workers)[:, None] * cfg.per_worker
        self.flat = (torch.from_numpy(self.index) + offsets).reshape(rounds, cfg.local_steps, -1)

    def _draw(self) -> np.ndarray:
        """The batch positions exactly as ``LocalData.sample`` draws them in each round/step."""
        streams, cfg = Streams(self.cfg.seed), self.cfg
        out = np.empty((self.rounds, cfg.local_steps, self.workers, cfg.batch_size), np.int64)
        for r in range(self.rounds):
            for step in range(cfg.local_steps):
                index = streams.integers(
                    "batch", self.shards.workers, r, cfg.batch_size, self.shards.sizes, step
                )
                out[r, step] = index.numpy()
        return out

    def run_lowcomm(self) -> np.ndarray:
        """The engine's run; returns the averaged model."""
        return self.simulation.run().model.numpy()

    def run_numpy(self) -> np.ndarray:
        """(a): a Python loop over workers with NumPy float32 arithmetic."""
        cfg, X, S, index = self.cfg, self.X, self.signs_np, self.index
        lr, l2, b = np.float32(cfg.lr), np.float32(cfg.l2), np.float32(cfg.batch_size)
        one = np.float32(1.0)
        avg = np.zeros(cfg.features, dtype=np.float32)
        for r in range(self.rounds):
            total = np.zeros_like(avg)
            for k in range(self.workers):
                Xk, Sk, x = X[k], S[k], avg
                for step in range(cfg.local_steps):
                    i = index[r, step, k]
                    A, s = Xk[i], Sk[i]
                    coeff = s / (one + np.exp(s * (A @ x))) / b  # s ⊙ σ(-m) / b
                    x = x - lr * (l2 * x - coeff @ A)
                total += x
            avg = total / np.float32(self.workers)
        return avg

    def run_torch(self) -> np.ndarray:
        """(b): every worker in one batched torch computation per step."""
        cfg, w, b, d = self.cfg, self.workers, self.cfg.batch_size, self.cfg.features
        X, S = self.shards.X.reshape(-1, d), self.signs.reshape(-1)
        avg = torch.zeros(d, dtype=torch.float32)
        for r in range(self.rounds):
            x = avg.expand(w, d)
            for step in range(cfg.local_steps):
                flat = self.flat[r, step]
                A = X.index_select(0, flat).view(w, b, d)
                s = S.index_select(0, flat).view(w, b)
                m = s * torch.bmm(x.unsqueeze(1), A.mT).squeeze(1)  # [w,1,d]x[w,d,b]
                coeff = s * torch.sigmoid(-m) / b
                g = cfg.l2 * x - torch.bmm(coeff.unsqueeze(1), A).squeeze(1)  # [w,1,b]x[w,b,d]
                x = x - cfg.lr * g
            avg = x.mean(dim=0)
        return avg.numpy()

    def contenders(self) -> dict[str, Callable[[], np.ndarray]]:
        """The three contenders by name."""
        runs = (self.run_lowcomm, self.run_numpy, self.run_torch)
        return dict(zip(CONTENDERS, runs, strict=True))

    def evaluation_seconds(self) -> float:
        """Seconds of one evaluation (train loss and test metric), which every run does twice."""
        model = torch.zeros(self.problem.dim, dtype=torch.float32)
        start = time.perf_counter()
        self.evaluator.train_loss(model)
        self.evaluator.test_metric(model)
        return time.perf_counter() - start


@dataclass
class Row:
    """Timings of one worker count, seconds per run."""

    workers: int
    rounds: int
    seconds: dict[str, list[float]]
    gate: dict[str, float]
    eval_seconds: float

    def us(self, name: str, stat: Callable[[list[float]], float]) -> float:
        """Microseconds per worker-round."""
        return stat(self.seconds[name]) / (self.rounds * self.workers) * 1e6


def relative_error(x: np.ndarray, ref: np.ndarray) -> float:
    """``max|x - ref| / max|ref|``."""
    return float(np.max(np.abs(x - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def timed(run: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    """Seconds taken by ``run()`` and its result, after a garbage collection."""
    gc.collect()
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def measure(case: Case, repeats: int) -> Row:
    """Gate (and warm up) each contender once, then time them interleaved."""
    runs = case.contenders()
    first = {name: run() for name, run in runs.items()}
    ref = first["lowcomm"]
    gate = {name: relative_error(x, ref) for name, x in first.items()}
    for name, err in gate.items():
        if not (np.all(np.isfinite(first[name])) and err <= case.cfg.rtol):
            sys.exit(
                f"correctness gate failed at {case.workers} workers: {name} differs from lowcomm "
                f"by max|Δ|/max|x| = {err:.3g} > rtol {case.cfg.rtol}; not timing."
            )
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for rep in range(repeats):
        for name in names[rep % 3 :] + names[: rep % 3]:
            t, out = timed(runs[name])
            if not np.array_equal(out, first[name]):
                sys.exit(f"{name} is not deterministic at {case.workers} workers.")
            seconds[name].append(t)
    return Row(case.workers, case.rounds, seconds, gate, case.evaluation_seconds())


def profile(case: Case, top: int = 25) -> str:
    """cProfile of one lowcomm run, the ``top`` functions by total (self) time."""
    profiler = cProfile.Profile()
    profiler.enable()
    case.run_lowcomm()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(top)
    return out.getvalue()


def default_rounds(workers: int, quick: bool) -> int:
    """Rounds for about 10,000 worker-rounds per run (3,000 with ``--quick``), at least 3."""
    return max(3, math.ceil((3_000 if quick else 10_000) / workers))


def table(rows: list[Row]) -> str:
    """The results as a markdown table (µs per worker-round: median, min in parentheses)."""
    head = [
        "workers",
        "rounds",
        *(f"{n} µs/wr" for n in CONTENDERS),
        "lowcomm/(a)",
        "lowcomm/(b)",
        "eval µs/wr",
        "gate max rel. Δ",
        "targets",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        med = {n: row.us(n, statistics.median) for n in CONTENDERS}
        low = {n: row.us(n, min) for n in CONTENDERS}
        vs_a, vs_b = med["lowcomm"] / med[CONTENDERS[1]], med["lowcomm"] / med[CONTENDERS[2]]
        target = "-"
        if row.workers in TARGET_WORKERS:
            marks = (
                "ok" if vs_a <= TARGET_VS_NUMPY else "missed",
                "ok" if vs_b <= TARGET_VS_TORCH else "missed",
            )
            target = f"(a) {marks[0]}, (b) {marks[1]}"
        cells = [
            str(row.workers),
            str(row.rounds),
            *(f"{med[n]:.2f} ({low[n]:.2f})" for n in CONTENDERS),
            f"{vs_a:.2f}x",
            f"{vs_b:.2f}x",
            f"{2 * row.eval_seconds / (row.rounds * row.workers) * 1e6:.2f}",
            f"{max(row.gate.values()):.1e}",
            target,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and repeats (<1 min)")
    parser.add_argument("--workers", default="10,100,1000", help="comma-separated worker counts")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per run (default: auto)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 5; 3)")
    parser.add_argument("--profile", action="store_true", help="cProfile one lowcomm run each")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the markdown table."""
    args = parse(argv)
    torch.set_num_threads(1)
    limits: AbstractContextManager[object] = (
        threadpool_limits(1) if threadpool_limits is not None else nullcontext()
    )
    cfg = Config()
    repeats = args.repeats or (3 if args.quick else 5)
    worker_counts = [int(w) for w in args.workers.split(",")]
    print(
        f"local SGD, L2 logistic regression: d={cfg.features}, {cfg.per_worker} examples/worker, "
        f"local_steps={cfg.local_steps}, batch_size={cfg.batch_size}, lr={cfg.lr}, l2={cfg.l2}, "
        f"float32; {repeats} timed runs after 1 gate/warm-up run, interleaved."
    )
    print(
        f"threads: torch {torch.get_num_threads()}, OMP/OPENBLAS/MKL_NUM_THREADS=1, threadpoolctl "
        f"{'on' if threadpool_limits else 'absent'}; cpus {os.cpu_count()}; "
        f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}\n"
    )
    rows = []
    with limits:
        for workers in worker_counts:
            rounds = args.rounds or default_rounds(workers, args.quick)
            case = Case(cfg, workers, rounds)
            rows.append(measure(case, repeats))
            if args.profile:
                print(f"--- cProfile, lowcomm, {workers} workers, {rounds} rounds ---")
                print(profile(case))
            del case
            gc.collect()
    print(table(rows))
    print(
        "\nµs per worker-round: median over the timed runs (min in parentheses); ratios of "
        "medians. eval µs/wr: the two evaluations inside each lowcomm run, amortised (included "
        f"in lowcomm, not subtracted). Targets at {', '.join(map(str, TARGET_WORKERS))} workers: "
        f"lowcomm/(a) <= {TARGET_VS_NUMPY} and lowcomm/(b) <= {TARGET_VS_TORCH}."
    )


if __name__ == "__main__":
    main()
