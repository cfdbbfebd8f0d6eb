"""Comparison figures that read with many lines: styles, legend, log axes, target, metric."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from lowcomm.experiments.plots import X_AXES, figure, line_style, spans_decades

METHODS = 20


def history(scale: float, seed: int) -> pd.DataFrame:
    """51 rounds; gradient evaluations grow ``scale`` times faster; no simulated time."""
    rounds = np.arange(51)
    return pd.DataFrame(
        {
            "round": rounds,
            "bytes_up": 10 * rounds,
            "bytes_down": 10 * rounds,
            "grad_evals": scale * rounds,
            "sim_time": 0.0,
            "train_loss": 1.0 / (1 + rounds * scale / 100) + 0.01 * seed,
            "test_metric": 0.5 + 0.004 * rounds,
        }
    )


RUNS = {
    f"method-{k}[lr={k}]": [history(1.1**k * (1000 if k == 7 else 1), seed) for seed in (0, 1)]
    for k in range(METHODS)
}


def methods(drawn: Figure) -> list[tuple[str, str, str]]:
    """Each method line of the first panel: label, colour, line style."""
    lines = [line for line in drawn.axes[0].get_lines() if not line.get_label().startswith("t")]
    return [(str(ln.get_label()), to_hex(ln.get_color()), str(ln.get_linestyle())) for ln in lines]


def test_twenty_methods_get_distinct_colour_and_style_pairs() -> None:
    drawn = figure(RUNS, list(X_AXES), target=0.3)
    styles = methods(drawn)
    assert [label for label, _, _ in styles] == list(RUNS)
    assert len({(colour, style) for _, colour, style in styles}) == METHODS
    assert all(a[1] != b[1] for a, b in itertools.pairwise(styles))
    assert "--" not in {style for _, _, style in styles}  # dashed is the target's alone


def test_the_first_33_line_styles_differ_and_neighbours_change_colour() -> None:
    pairs = [line_style(k) for k in range(33)]
    assert len(set(pairs)) == 33
    assert all(a[0] != b[0] for a, b in itertools.pairwise(pairs))


def test_one_legend_outside_every_axes_with_the_seed_count_as_title() -> None:
    drawn = figure(RUNS, list(X_AXES), target=0.3)
    drawn.draw_without_rendering()
    (legend,) = drawn.legends
    assert all(ax.get_legend() is None for ax in drawn.axes)
    assert [text.get_text() for text in legend.get_texts()] == [*RUNS, "target loss 0.3"]
    assert legend.get_title().get_text() == "mean of 2 seeds, band: min to max"
    box = legend.get_window_extent()
    assert not any(box.overlaps(ax.get_window_extent()) for ax in drawn.axes)


def test_an_x_axis_spanning_more_than_two_decades_is_logarithmic() -> None:
    drawn = figure(RUNS, list(X_AXES), target=0.3)
    scales = {x: ax.get_xscale() for x, ax in zip(X_AXES, drawn.axes, strict=True)}
    assert scales == {
        "round": "linear",
        "bytes": "linear",
        "grad_evals": "log",
        "sim_time": "linear",
    }
    assert all(ax.get_yscale() == "log" for ax in drawn.axes)


@pytest.mark.parametrize(
    ("values", "spans"),
    [
        ([0.0, 1.0, 100.0], False),
        ([0.0, 1.0, 100.5], True),
        ([-1e6, 2.0, 150.0], False),
        ([math.nan, math.inf, 0.0, 1e-3, 0.2], True),
        ([], False),
    ],
)
def test_spans_decades_looks_at_finite_positive_values(values: list[float], spans: bool) -> None:
    assert spans_decades(values) is spans


def test_the_target_is_a_dashed_line_on_every_loss_panel() -> None:
    drawn = figure(RUNS, list(X_AXES), target=0.3)
    for ax in drawn.axes:
        (target,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert list(target.get_ydata()) == [0.3, 0.3]
        assert to_hex(target.get_color()) == "#000000"
    untargeted = figure(RUNS, ["round"], target=None)
    assert all(line.get_linestyle() != "--" for line in untargeted.axes[0].get_lines())


def test_the_y_label_names_the_loss_or_the_test_metric() -> None:
    assert figure(RUNS, ["round"]).axes[0].get_ylabel() == "Training loss"
    accuracy = figure(RUNS, ["bytes"], y="test_metric", metric="accuracy", target=0.3).axes[0]
    assert accuracy.get_ylabel() == "Test accuracy"
    assert accuracy.get_title() == "Test accuracy against communication"
    assert accuracy.get_yscale() == "linear"
    assert all(line.get_linestyle() != "--" for line in accuracy.get_lines())
