"""Start-up time of the command line beside ``python -c "import torch"`` (issue 15, item 4).

Each contender is a fresh interpreter, run ``repeats`` times interleaved (the order rotates), so
a drift of the machine's speed hits all of them alike; the median and the minimum wall time
are printed, and each command's median over that of ``import torch`` (target: at most 1.3).

Usage: ``python benchmarks/bench_startup.py [--repeats R]``
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
    "lowcomm --help": [sys.executable, "-m", "lowcomm", "--help"],
    "lowcomm run --help": [sys.executable, "-m", "lowcomm", "run", "--help"],
    "lowcomm algorithms": [sys.executable, "-m", "lowcomm", "algorithms"],
}
BASELINE = 'python -c "import torch"'


def seconds(command: list[str]) -> float:
    """Wall time of one run of ``command`` (output discarded); fails if it fails."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(repeats: int) -> dict[str, list[float]]:
    """``repeats`` timings per command after one warm-up run each, interleaved."""
    names = list(COMMANDS)
    for name in names:
        seconds(COMMANDS[name])
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(seconds(COMMANDS[name]))
    return times


def main() -> None:
    """Print a Markdown table: median and minimum seconds, and the ratio to ``import torch``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    times = measure(parser.parse_args().repeats)
    base = statistics.median(times[BASELINE])
    print("| command | median (s) | min (s) | median / import torch |")
    print("|---|---|---|---|")
    for name, runs in times.items():
        median = statistics.median(runs)
        print(f"| `{name}` | {median:.2f} | {min(runs):.2f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
