"""Exact Newton solves: local-newton against GIANT per sync round, and exact against CG per d.

Part 1 (issue 15's target: local-newton at most 3x GIANT's time per sync round). Both run on the
demo's setting (``examples/demo.yaml``: digits, 8 workers, ``dirichlet:0.5``, seed 0, float32,
l2 = 1e-4; softmax regression, d = 640): ``local-newton`` with ``solver=exact`` and its other
defaults (L = 4 local steps per round), ``giant`` with its defaults (CG, 50 iterations; 2 sync
rounds per iteration). Time per sync round is the run's training-loop wall time (the history's
``wall_time``, evaluation excluded) over its ``sync_rounds``.

Part 2 (what sets ``solver=auto``'s :data:`~lowcomm.algorithms.newton.EXACT_MAX_DIM`): one Newton
direction for 8 workers, exact (closed-form Hessian, batched LU solve) against CG (at most 50
iterations, tol 1e-6, local-newton's defaults), on L2 logistic regression with d = 300, 1000,
2000 (500 Gaussian examples per worker, float32, l2 = 1e-3), and on the demo's softmax at d = 640.

Before timing, a correctness gate (float64, at a random point of the demo's shards; in a child
interpreter, so that its large frees do not warm the allocator of the timed process) aborts
unless the closed-form softmax Hessian times random vectors equals the Hessian-vector products
(a separate code path) to ``1e-12`` relative, and the exact direction equals NumPy's
per-worker ``linalg.solve`` to ``1e-10``. Runs are repeated ``repeats`` times, interleaved (the
starting contender alternates); every repetition must give the first one's model bit for bit.

One thread: ``OMP/OPENBLAS/MKL_NUM_THREADS=1`` before NumPy is imported, and
``torch.set_num_threads(1)``.

Usage: ``python benchmarks/bench_newton.py [--quick] [--rounds N] [--repeats R]``
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import gc
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

import lowcomm
from lowcomm.algorithms.local_data import LocalData
from lowcomm.algorithms.newton import NewtonSolver
from lowcomm.data.dataset import Dataset, Shards
from lowcomm.experiments.config import make_config
from lowcomm.experiments.runner import prepare
from lowcomm.problems.logistic import LogisticRegression

DEMO: dict[str, Any] = {"data": "digits", "workers": 8, "partition": "dirichlet:0.5", "seed": 0}
RUNS = {"local-newton": {"solver": "exact"}, "giant": {}}
TARGET = 3.0
DIMS = (300, 1000, 2000)
WORKERS, PER_WORKER = 8, 500
SOLVERS = {"exact": NewtonSolver("exact"), "cg": NewtonSolver("cg", 1e-6, 50)}


def relative_error(x: np.ndarray, ref: np.ndarray) -> float:
    """``max|x - ref| / max|ref|``."""
    return float(np.max(np.abs(x - ref)) / max(float(np.max(np.abs(ref))), 1e-300))


def demo_data(dtype: str) -> LocalData:
    """The demo's shards and softmax problem, as a local-newton run builds them."""
    prepared = prepare(make_config({"algorithm": "local-newton", "dtype": dtype, **DEMO}))
    return LocalData(prepared.problem, prepared.shards)


def random_point(data: LocalData, scale: float = 0.05) -> torch.Tensor:
    """A seeded point ``[w, d]`` away from 0, where the class probabilities differ."""
    w, d = data.sizes.shape[0], data.problem.dim
    point = torch.randn(w, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return (scale * point).to(data.problem.dtype)


def gate() -> dict[str, float]:
    """Closed-form Hessian against HVPs, the exact direction against NumPy; exit if off."""
    data = demo_data("float64")
    params = random_point(data)
    H = data.hessian(params)
    v = torch.randn(params.shape, generator=torch.Generator().manual_seed(2), dtype=H.dtype)
    hessian = relative_error((H @ v[..., None])[..., 0].numpy(), data.hvp(params, v).numpy())
    grad = data.grad(params)
    ref = np.stack([np.linalg.solve(h, g) for h, g in zip(H.numpy(), grad.numpy(), strict=True)])
    solve = relative_error(torch.linalg.solve(H, grad).numpy(), ref)
    errors = {"hessian vs hvp": hessian, "exact direction vs numpy solve": solve}
    for (name, err), tol in zip(errors.items(), (1e-12, 1e-10), strict=True):
        if not err <= tol:
            sys.exit(f"correctness gate failed: {name} max|Δ|/max|x| = {err:.3g} > {tol}")
    return errors


def run_demo(name: str, rounds: int) -> tuple[float, np.ndarray]:
    """Seconds per sync round of one demo run of ``name``, and its final model."""
    gc.collect()
    result = lowcomm.run(name, rounds=rounds, eval_every=rounds, settings=RUNS[name], **DEMO)
    assert result is not None  # None only on a torchdist rank other than 0
    last = result.history.iloc[-1]
    return float(last["wall_time"]) / float(last["sync_rounds"]), result.params.numpy()


def interleaved(
    contenders: dict[str, Callable[[], tuple[float, np.ndarray]]], repeats: int
) -> dict[str, list[float]]:
    """Seconds of each contender over ``repeats`` interleaved runs; exit if one varies."""
    first = {name: run() for name, run in contenders.items()}  # warm-up and the reference
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for rep in range(repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            t, out = contenders[name]()
            if not np.array_equal(out, first[name][1]):
                sys.exit(f"{name} is not deterministic.")
            seconds[name].append(t)
    return seconds


def synthetic_logistic(d: int) -> LocalData:
    """8 workers x 500 Gaussian examples of an L2 logistic regression with ``d`` features."""
    rng = np.random.default_rng(d)
    n = WORKERS * PER_WORKER
    X = rng.standard_normal((n, d)) / math.sqrt(d)
    y = (X @ rng.standard_normal(d) + rng.logistic(size=n) > 0).astype(np.int64)
    parts = np.split(np.arange(n), WORKERS)
    problem = LogisticRegression(d, 1e-3)
    return LocalData(problem, Shards.build(Dataset("synthetic", X, y, 2), parts, problem.dtype))


def direction(data: LocalData, params: torch.Tensor, solver: str) -> tuple[float, np.ndarray]:
    """Seconds for one Newton direction of every worker by ``solver``, and the direction."""
    gc.collect()
    grad = data.grad(params)
    start = time.perf_counter()
    out = SOLVERS[solver].solve(data, params, grad)
    return time.perf_counter() - start, out.numpy()


def residual(data: LocalData, params: torch.Tensor, solver: str) -> float:
    """Largest relative residual ``||H p - g|| / ||g||`` over workers of ``solver``'s direction."""
    grad = data.grad(params)
    p = SOLVERS[solver].solve(data, params, grad)
    return float(((data.hvp(params, p) - grad).norm(dim=1) / grad.norm(dim=1)).max())


def solver_rows(repeats: int) -> list[tuple[str, dict[str, list[float]], dict[str, float]]]:
    """Part 2: exact and CG direction timings and residuals, per problem."""
    cases = [(f"logistic d = {d}", synthetic_logistic(d)) for d in DIMS]
    cases.insert(1, ("softmax digits d = 640 (demo)", demo_data("float32")))
    rows = []
    for label, data in cases:
        params = random_point(data)
        seconds = interleaved({s: partial(direction, data, params, s) for s in SOLVERS}, repeats)
        rows.append((label, seconds, {s: residual(data, params, s) for s in SOLVERS}))
    return rows


def ms(values: list[float]) -> str:
    """Median (minimum) in milliseconds."""
    return f"{statistics.median(values) * 1e3:.1f} ({min(values) * 1e3:.1f})"


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and repeats")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per run (default 30; 6)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 5; 2)")
    parser.add_argument("--gate", action="store_true", help="only the correctness gate")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Gate, then part 1 and part 2; print both tables."""
    args = parse(argv)
    rounds = args.rounds or (6 if args.quick else 30)
    repeats = args.repeats or (2 if args.quick else 5)
    torch.set_num_threads(1)
    if args.gate:
        errors = gate()
        print("gate: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
        return
    print(f"# bench_newton: torch {torch.__version__}, {platform.machine()}, one thread")
    if subprocess.run([sys.executable, __file__, "--gate"], check=False).returncode:
        sys.exit("not timing: the correctness gate failed.")
    seconds = interleaved({name: partial(run_demo, name, rounds) for name in RUNS}, repeats)
    print(f"\nPart 1: demo setting, {rounds} rounds, {repeats} repeats; ms per sync round")
    print("| algorithm | median (min) |\n|---|---|")
    for name, values in seconds.items():
        print(f"| {name} | {ms(values)} |")
    ratio = statistics.median(seconds["local-newton"]) / statistics.median(seconds["giant"])
    print(f"local-newton / giant: {ratio:.1f}x (target <= {TARGET:g}x)")
    print(f"\nPart 2: one direction, 8 workers, {repeats} repeats; ms, median (min)")
    print("| problem | exact | cg (50 it, tol 1e-6) | exact/cg | cg residual |")
    print("|---|---|---|---|---|")
    for label, times, res in solver_rows(repeats):
        share = statistics.median(times["exact"]) / statistics.median(times["cg"])
        cells = (label, ms(times["exact"]), ms(times["cg"]), f"{share:.1f}", f"{res['cg']:.0e}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
