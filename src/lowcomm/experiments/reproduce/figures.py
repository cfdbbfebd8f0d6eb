"""A study's figures, declared: :class:`Chart` of :class:`Panel` data, drawn by one :func:`draw`.

A spec says what a figure shows (points in long format, axis labels and scales, target lines)
and never how it is drawn, so every reproduction's figures look alike and the drawing code lives
once, here. Figures are drawn on :class:`matplotlib.figure.Figure` objects (no pyplot state).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lowcomm.experiments.plots import DPI, seed_band

MAX_DOTS = 40  # a line of more points is drawn without a dot at each


@dataclass(frozen=True)
class Panel:
    """One set of axes.

    Attributes:
        points: long format, one row per point: ``line`` (the legend label), ``x``, ``y`` and
            optionally ``low`` and ``high`` (a band). For a heat map: ``x`` (columns), ``y``
            (rows), ``value`` (coloured as log10) and ``text`` (written in the cell).
        x, y: the axis labels.
        title: the panel's title.
        log_x, log_y: log scales (non-positive values masked).
        lines: horizontal lines at these y values (targets).
        ylim: the y-axis range, if fixed.
        dashed: the lines drawn dashed.
        step: draw the lines as steps (a value holds until the next point).
        heat: draw a heat map instead of lines.
    """

    points: pd.DataFrame
    x: str
    y: str
    title: str = ""
    log_x: bool = False
    log_y: bool = False
    lines: tuple[float, ...] = ()
    ylim: tuple[float, float] | None = None
    dashed: tuple[str, ...] = ()
    step: bool = False
    heat: bool = False


@dataclass(frozen=True)
class Chart:
    """A figure: its panels (None: an empty place), ``columns`` across, each ``size`` inches.

    ``legend``: ``"each"`` panel, the ``"first"`` only, or one for the whole ``"figure"``.
    """

    panels: Sequence[Panel | None]
    columns: int = 1
    size: tuple[float, float] = (6.4, 4.8)
    legend: Literal["each", "first", "figure"] = "each"
    title: str = ""


def bands(runs: Mapping[str, Sequence[pd.DataFrame]], x: str, y: str) -> pd.DataFrame:
    """Points of one line per label: mean of ``y`` over its seeds' histories, min-max band."""
    frames = [
        seed_band(histories, x, y).assign(line=label).rename(columns={"mean": "y"})
        for label, histories in runs.items()
    ]
    return pd.concat(frames, ignore_index=True)


def draw(chart: Chart) -> Figure:
    """The chart as a matplotlib figure."""
    columns = min(chart.columns, len(chart.panels))
    rows = math.ceil(len(chart.panels) / columns)
    width, height = chart.size
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for ax, panel in zip_longest(axes, chart.panels):
        if panel is None:
            ax.set_visible(False)
        else:
            (_heat if panel.heat else _lines)(ax, panel, figure)
            wanted = chart.legend == "each" or (chart.legend == "first" and ax is axes[0])
            if wanted and ax.get_legend_handles_labels()[0]:  # a heat map has no lines
                ax.legend(fontsize="x-small")
    if chart.legend == "figure":
        handles, labels = axes[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", ncol=5, fontsize="small")
    figure.suptitle(chart.title)
    return figure


def save(chart: Chart, path: Path) -> None:
    """Draw ``chart`` and write it as a PNG at the library's DPI."""
    draw(chart).savefig(path, dpi=DPI)


def _lines(ax: Axes, panel: Panel, figure: Figure) -> None:
    """One line per ``line`` label (with its band), then the target lines, scales and labels."""
    for label, line in panel.points.groupby("line", sort=False):
        style = "--" if label in panel.dashed else "-"
        if panel.step:
            ax.step(line["x"], line["y"], where="post", label=label, linestyle=style)
            continue
        dots = "." if len(line) <= MAX_DOTS else None
        (drawn,) = ax.plot(line["x"], line["y"], marker=dots, label=label, linestyle=style)
        if {"low", "high"} <= set(line):
            ax.fill_between(
                line["x"], line["low"], line["high"], alpha=0.2, color=drawn.get_color()
            )
    for value in panel.lines:
        ax.axhline(value, color="gray", linestyle=":", linewidth=0.8)
    if panel.log_x:
        ax.set_xscale("log", nonpositive="mask")
    if panel.log_y:
        ax.set_yscale("log", nonpositive="mask")
    if panel.ylim is not None:
        ax.set_ylim(*panel.ylim)
    ax.set(xlabel=panel.x, ylabel=panel.y)
    ax.set_title(panel.title, fontsize="small")
    ax.grid(True, which="both", alpha=0.3)


def _heat(ax: Axes, panel: Panel, figure: Figure) -> None:
    """log10 ``value`` per (``y``, ``x``) cell, each cell's ``text`` written on it."""
    values = panel.points.pivot(index="y", columns="x", values="value")
    texts = panel.points.pivot(index="y", columns="x", values="text").to_numpy()
    finite = values.to_numpy(float)
    shown = np.log10(np.where(np.isfinite(finite), finite, np.nan).clip(min=1e-12))
    figure.colorbar(ax.imshow(shown, aspect="auto"), ax=ax)
    for (r, c), text in np.ndenumerate(texts):
        ax.text(c, r, text, fontsize=6, color="w", ha="center", va="center")
    ax.set_xticks(range(len(values.columns)), [f"{v:g}" for v in values.columns])
    ax.set_yticks(range(len(values.index)), [f"{v:g}" for v in values.index])
    ax.set(xlabel=panel.x, ylabel=panel.y, title=panel.title)
