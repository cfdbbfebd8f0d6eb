"""Overlaid curves of saved histories: one line per algorithm (mean over seeds, min-max band).

Figures are drawn on :class:`matplotlib.figure.Figure` objects and saved with the Agg
renderer, so nothing here opens a window or touches pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator

from lowcomm.experiments.results import stack_seeds

DPI = 150
MB = 1e6
X_AXES = {
    "round": ("Rounds", 1.0),
    "bytes": ("Bytes up + down, all workers (MB)", MB),
    "grad_evals": ("Gradient evaluations, all workers", 1.0),
    "sim_time": ("Simulated time (s)", 1.0),
}
X_TITLES = {
    "round": "against rounds",
    "bytes": "against communication",
    "grad_evals": "against computation",
    "sim_time": "against simulated time",
}
NO_SIM_TIME = "simulated time is 0:\nset --latency, --bandwidth\nor --seconds-per-grad"
Y_LABELS = {"train_loss": "Training loss", "test_metric": "Test metric"}

Runs = Mapping[str, Sequence[pd.DataFrame]]


def title(config: Mapping[str, Any]) -> str:
    """A figure title from a run config: data, workers and partition (empty if unknown)."""
    if not {"data", "workers", "partition"} <= set(config):
        return ""
    return f"{config['data']}, {config['workers']} workers, {config['partition']} partition"


def seed_band(histories: Sequence[pd.DataFrame], x: str, y: str) -> pd.DataFrame:
    """Per round: the mean of ``x`` and the mean, min and max of ``y`` over seeds."""
    grouped = stack_seeds(histories).groupby("round")
    return grouped.agg(x=(x, "mean"), mean=(y, "mean"), low=(y, "min"), high=(y, "max"))


def _curve(ax: Axes, name: str, histories: Sequence[pd.DataFrame], x: str, y: str) -> bool:
    """Draw one label's mean curve (and min-max band); whether all its y values are > 0."""
    band = seed_band(histories, x, y)
    xs = band["x"] / X_AXES[x][1]
    seeds = len(histories)
    (line,) = ax.plot(
        xs, band["mean"], label=name if seeds == 1 else f"{name} (mean of {seeds} seeds)"
    )
    if seeds > 1:
        ax.fill_between(xs, band["low"], band["high"], color=line.get_color(), alpha=0.2)
    return bool((band["low"] > 0).all())


def _log_y(ax: Axes) -> None:
    """A log y-axis with plain-number tick labels (minor ones when few decades are shown)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter())
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def draw(ax: Axes, runs: Runs, x: str, y: str) -> None:
    """Overlay one curve per label of ``runs`` on ``ax``: ``y`` against ``x``."""
    positive = [_curve(ax, name, histories, x, y) for name, histories in runs.items()]
    if y == "train_loss" and all(positive):
        _log_y(ax)
    if x == "sim_time" and not any((h["sim_time"] > 0).any() for hs in runs.values() for h in hs):
        note = {"facecolor": "white", "edgecolor": "lightgray"}
        ax.text(0.5, 0.5, NO_SIM_TIME, transform=ax.transAxes, ha="center", va="center", bbox=note)
    if x == "round":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(X_AXES[x][0])
    ax.set_ylabel(Y_LABELS.get(y, y))
    ax.set_title(f"{Y_LABELS.get(y, y)} {X_TITLES[x]}")
    ax.grid(True, which="both", alpha=0.3)


def _save(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as a PNG at :data:`DPI`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def plot_runs(runs: Runs, path: Path, y: str = "train_loss", title: str = "") -> list[Path]:
    """Draw ``y`` against every x-axis of :data:`X_AXES` and save the figures.

    Args:
        runs: per label (an algorithm), the histories of its seeds.
        path: the four-panel figure; one figure per x-axis goes next to it as
            ``<stem>-<x>.png`` (e.g. ``compare-bytes.png``).
        y: the history column on the y-axis.
        title: the figures' title.

    Returns:
        The paths written, the four-panel figure first.
    """
    grid = Figure(figsize=(11, 8.5), layout="constrained")
    for ax, x in zip(grid.subplots(2, 2).flat, X_AXES, strict=True):
        draw(ax, runs, x, y)
    grid.axes[0].legend()
    grid.suptitle(title)
    written = [_save(grid, path)]
    for x in X_AXES:
        single = Figure(figsize=(6.4, 4.8), layout="constrained")
        ax = single.subplots()
        draw(ax, runs, x, y)
        ax.legend()
        single.suptitle(title)
        written.append(_save(single, path.with_name(f"{path.stem}-{x}.png")))
    return written
