"""Overlaid curves of saved histories: one line per label (mean over seeds, min-max band).

Made to read with many lines (a comparison of 20 methods): each label gets its own (colour,
line style) pair (:func:`line_style`), one legend sits outside the axes at the right of the
figure, an x-axis whose values span more than two decades is logarithmic
(:func:`spans_decades`), a target loss is a dashed black line, and the test metric is named.

Figures are drawn on :class:`matplotlib.figure.Figure` objects and saved with the Agg
renderer, so nothing here opens a window or touches pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import TABLEAU_COLORS
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

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
Y_LABELS = {"train_loss": "Training loss"}
COLOURS = (*TABLEAU_COLORS, "black")
STYLES = ("-", "-.", ":")
"""Line styles of the methods; dashed (``--``) is kept for the target line."""
TARGET_COLOUR, TARGET_STYLE = "black", "--"
DECADES = 2

Runs = Mapping[str, Sequence[pd.DataFrame]]


def title(config: Mapping[str, Any]) -> str:
    """A figure title from a run config: data, workers and partition (empty if unknown)."""
    if not {"data", "workers", "partition"} <= set(config):
        return ""
    return f"{config['data']}, {config['workers']} workers, {config['partition']} partition"


def y_label(y: str, metric: str = "metric") -> str:
    """The name of history column ``y``: ``Test accuracy`` for ``test_metric`` of accuracy."""
    return f"Test {metric}" if y == "test_metric" else Y_LABELS.get(y, y)


def line_style(index: int) -> tuple[str, str]:
    """The colour and line style of the ``index``-th line.

    The colour changes from one line to the next; the style after every
    ``len(COLOURS)`` lines, so the first ``len(COLOURS) * len(STYLES)`` (33) pairs differ.
    """
    return COLOURS[index % len(COLOURS)], STYLES[index // len(COLOURS) % len(STYLES)]


def spans_decades(values: Any, decades: int = DECADES) -> bool:
    """Whether the finite positive ``values`` span more than ``decades`` powers of ten."""
    array = np.asarray(values, dtype=float)
    positive = array[np.isfinite(array) & (array > 0)]
    return positive.size > 0 and float(positive.max() / positive.min()) > 10.0**decades


def seed_band(histories: Sequence[pd.DataFrame], x: str, y: str) -> pd.DataFrame:
    """Per round: the mean of ``x`` and the mean, min and max of ``y`` over seeds."""
    grouped = stack_seeds(histories).groupby("round")
    return grouped.agg(x=(x, "mean"), mean=(y, "mean"), low=(y, "min"), high=(y, "max"))


def _legend_labels(runs: Runs) -> tuple[list[str], str | None]:
    """Each label's legend entry and the legend title (the seed count, when all share it)."""
    counts = {len(histories) for histories in runs.values()}
    if len(counts) == 1:
        (seeds,) = counts
        heading = f"mean of {seeds} seeds, band: min to max" if seeds > 1 else None
        return list(runs), heading
    entries = [
        f"{name} (mean of {len(hs)} seeds)" if len(hs) > 1 else name for name, hs in runs.items()
    ]
    return entries, None


def _log_y(ax: Axes, values: np.ndarray) -> None:
    """A log y-axis with plain-number labels (``0.3``), at 2, 3 and 5 too within two decades."""
    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    if spans_decades(values):
        ax.yaxis.set_minor_formatter(NullFormatter())
        return
    ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 3.0, 5.0)))
    ax.yaxis.set_minor_formatter(plain)


def draw(
    ax: Axes, runs: Runs, x: str, y: str, metric: str = "metric", target: float | None = None
) -> None:
    """Overlay one curve per label of ``runs`` on ``ax``: ``y`` against ``x``.

    ``target`` (a training loss) is drawn as a dashed line when ``y`` is ``train_loss``.
    """
    entries, _ = _legend_labels(runs)
    positive, xs, ys = True, [], []
    for index, (entry, histories) in enumerate(zip(entries, runs.values(), strict=True)):
        band = seed_band(histories, x, y)
        colour, style = line_style(index)
        xs.append(band["x"] / X_AXES[x][1])
        ys.extend([band["low"], band["high"]])
        ax.plot(xs[-1], band["mean"], color=colour, linestyle=style, label=entry)
        if len(histories) > 1:
            ax.fill_between(xs[-1], band["low"], band["high"], color=colour, alpha=0.12)
        positive = positive and bool((band["low"] > 0).all())
    if y == "train_loss" and target is not None and np.isfinite(target):
        ax.axhline(
            target, color=TARGET_COLOUR, linestyle=TARGET_STYLE, label=f"target loss {target:.4g}"
        )
    if y == "train_loss" and positive:
        _log_y(ax, np.concatenate(ys) if ys else np.empty(0))
    _x_axis(ax, runs, x, np.concatenate(xs) if xs else np.empty(0))
    ax.set_ylabel(y_label(y, metric))
    ax.set_title(f"{y_label(y, metric)} {X_TITLES[x]}")
    ax.grid(True, which="both", alpha=0.3)


def _x_axis(ax: Axes, runs: Runs, x: str, values: np.ndarray) -> None:
    """Label the x-axis; logarithmic when :func:`spans_decades` (x = 0 is then not shown)."""
    if spans_decades(values):
        ax.set_xscale("log", nonpositive="mask")
    elif x == "round":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if x == "sim_time" and not any((h["sim_time"] > 0).any() for hs in runs.values() for h in hs):
        note = {"facecolor": "white", "edgecolor": "lightgray"}
        ax.text(0.5, 0.5, NO_SIM_TIME, transform=ax.transAxes, ha="center", va="center", bbox=note)
    ax.set_xlabel(X_AXES[x][0])


def figure(
    runs: Runs,
    xs: Sequence[str],
    y: str = "train_loss",
    title: str = "",
    metric: str = "metric",
    target: float | None = None,
) -> Figure:
    """One panel of ``y`` per x-axis in ``xs`` (2 x 2 for four), one legend at the right."""
    shape = (2, 2) if len(xs) == 4 else (1, len(xs))
    size = (13, 8.5) if len(xs) == 4 else (4.5 + 4 * len(xs), 4.8)
    drawn = Figure(figsize=size, layout="constrained")
    for ax, x in zip(drawn.subplots(*shape, squeeze=False).flat, xs, strict=True):
        draw(ax, runs, x, y, metric, target)
    handles, labels = drawn.axes[0].get_legend_handles_labels()
    _, heading = _legend_labels(runs)
    drawn.legend(handles, labels, loc="outside right upper", title=heading, fontsize="small")
    drawn.suptitle(title)
    return drawn


def _save(drawn: Figure, path: Path) -> Path:
    """Write ``drawn`` as a PNG at :data:`DPI`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    drawn.savefig(path, dpi=DPI)
    return path


def plot_runs(
    runs: Runs,
    path: Path,
    y: str = "train_loss",
    title: str = "",
    metric: str = "metric",
    target: float | None = None,
) -> list[Path]:
    """Draw ``y`` against every x-axis of :data:`X_AXES` and save the figures.

    Args:
        runs: per label (an algorithm or a variant), the histories of its seeds.
        path: the four-panel figure; one figure per x-axis goes next to it as
            ``<stem>-<x>.png`` (e.g. ``compare-bytes.png``).
        y: the history column on the y-axis.
        title: the figures' title.
        metric: the name of the test metric (``accuracy``, ``perplexity``, ...).
        target: a training loss drawn as a dashed line (when ``y`` is ``train_loss``).

    Returns:
        The paths written, the four-panel figure first.
    """
    written = [_save(figure(runs, list(X_AXES), y, title, metric, target), path)]
    for x in X_AXES:
        single = figure(runs, [x], y, title, metric, target)
        written.append(_save(single, path.with_name(f"{path.stem}-{x}.png")))
    return written
