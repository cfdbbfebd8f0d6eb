"""Simulate engine on cuda against cpu: rounds per second of LeNet on MNIST-shaped data.

``sgd`` (batch 32 per worker, lr 0.05, float32) trains LeNet-5 (61,706 parameters) on synthetic
MNIST-shaped data: 28 x 28 images of uniform pixels, 10 classes given by a fixed random linear
teacher, 60,000 training and 10,000 test examples split iid over the workers (600 examples per
worker at 100 workers, 60 at 1,000). Nothing is downloaded. Each (workers, device) pair runs
``lowcomm.run(..., device=...)`` twice in this process: a one-round warm-up (kernels loaded,
caches filled), then the measured run of ``--rounds`` rounds with ``eval_every = rounds``. The
rate is rounds / ``wall_time``, the engine's own clock of its training loop (evaluation
excluded); every round ends with the ledger reading the round's bytes back to the host, so a
CUDA round is finished when it is counted.

Without CUDA only the cpu rows are measured and the cuda column says so. The final training
loss of each run is printed too: the devices compute the same run up to floating-point
rounding, so the losses agree to a few digits.

Usage: ``python benchmarks/bench_device.py [--workers 100,1000] [--rounds N]
[--devices cpu,cuda] [--examples N]``
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import dataclass

import numpy as np
import torch

import lowcomm

SIDE, CLASSES, TEST = 28, 10, 10_000
SETTINGS = {"lr": 0.05, "batch_size": 32}
Examples = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Measured:
    """One (workers, device) run: rounds, seconds in the training loop, final training loss."""

    workers: int
    per_worker: int
    device: str
    rounds: int
    seconds: float
    loss: float

    @property
    def rate(self) -> float:
        """Rounds per second."""
        return self.rounds / self.seconds


def mnist_shaped(examples: int, seed: int = 0) -> tuple[Examples, Examples]:
    """Training and test sets of flat 28 x 28 float32 images, labels of a random teacher."""
    rng = np.random.default_rng(seed)
    X = rng.random((examples + TEST, SIDE * SIDE), dtype=np.float32)
    teacher = rng.standard_normal((SIDE * SIDE, CLASSES)).astype(np.float32)
    y = np.argmax((X - 0.5) @ teacher, axis=1)
    return (X[:examples], y[:examples]), (X[examples:], y[examples:])


def measure(workers: int, device: str, rounds: int, data: tuple[Examples, Examples]) -> Measured:
    """Warm up with one round, then time ``rounds`` rounds of ``sgd`` on LeNet."""
    train, test = data

    def run(n: int) -> lowcomm.Result:
        result = lowcomm.run(
            "sgd",
            model="lenet",
            data=train,
            test=test,
            workers=workers,
            rounds=n,
            eval_every=n,
            settings=SETTINGS,
            device=device,
        )
        assert result is not None, "the simulate engine always returns a result"
        return result

    run(1)
    last = run(rounds).history.iloc[-1]
    per_worker = len(train[1]) // workers
    return Measured(
        workers, per_worker, device, rounds, float(last["wall_time"]), float(last["train_loss"])
    )


def table(rows: list[Measured], workers: list[int], cuda: bool) -> str:
    """Two markdown tables: every run, then cpu and cuda rounds per second side by side."""
    lines = [
        "| workers | examples per worker | device | rounds | s per round | rounds/s | final loss |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {r.workers:,} | {r.per_worker:,} | {r.device} | {r.rounds} "
            f"| {r.seconds / r.rounds:.3f} | {r.rate:.2f} | {r.loss:.4f} |"
            for r in rows
        ),
        "",
        "| workers | cpu rounds/s | cuda rounds/s | cuda / cpu |",
        "| ---: | ---: | ---: | ---: |",
    ]
    missing = "not measured" if cuda else "unavailable (no CUDA here)"
    for count in workers:
        rate = {r.device: r.rate for r in rows if r.workers == count}
        cpu = f"{rate['cpu']:.2f}" if "cpu" in rate else "not measured"
        gpu = f"{rate['cuda']:.2f}" if "cuda" in rate else missing
        ratio = f"{rate['cuda'] / rate['cpu']:.1f}x" if {"cpu", "cuda"} <= rate.keys() else "-"
        lines.append(f"| {count:,} | {cpu} | {gpu} | {ratio} |")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--workers", default="100,1000", help="comma-separated worker counts")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per run")
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated: cpu, cuda")
    parser.add_argument("--examples", type=int, default=60_000, help="training examples")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run every (workers, device) pair and print the tables."""
    args = parse(argv)
    workers = [int(w) for w in args.workers.split(",")]
    cuda = torch.cuda.is_available()
    devices = [d for d in args.devices.split(",") if d == "cpu" or (d == "cuda" and cuda)]
    gpu = torch.cuda.get_device_name() if cuda else "none (CUDA unavailable: cpu rows only)"
    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"threads; GPU: {gpu}; torch {torch.__version__}, lowcomm {lowcomm.__version__}"
    )
    data = mnist_shaped(args.examples)
    rows = [measure(count, device, args.rounds, data) for count in workers for device in devices]
    print(table(rows, workers, cuda))


if __name__ == "__main__":
    main()
