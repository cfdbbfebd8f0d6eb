"""``lowcomm partition``: how a scheme splits a data set among workers, as a table and a figure.

The split is the one a run with the same data, workers, partition, seed and test fraction
trains on (before an algorithm drops examples it cannot use, :mod:`lowcomm.experiments.kept`):
the same loader and the same :func:`~lowcomm.data.partition.partition`. Like flwr-datasets'
``plot_label_distributions``, the figure stacks each worker's labels; a second panel shows the
shard sizes. Beyond :data:`MAX_LABELS` labels, the rarest are summed into ``other``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import TABLEAU_COLORS
from matplotlib.figure import Figure
from rich.table import Table

from lowcomm.data.loaders import load_data
from lowcomm.data.partition import partition, partition_summary
from lowcomm.data.spec import parse_data_spec, parse_partition_spec

MAX_LABELS = 10
"""Labels shown one by one; the rest (the rarest over the whole set) are one ``other``."""
OTHER = "other"
DPI = 150


@dataclass(frozen=True)
class PartitionView:
    """Per-worker shard sizes and label counts (``counts[w, j]``: label ``labels[j]``)."""

    title: str
    labels: list[str]
    counts: np.ndarray
    sizes: np.ndarray


def partition_view(
    data: str, workers: int, scheme: str, seed: int, test_fraction: float
) -> PartitionView:
    """Load ``data``, partition its training set as a run would, and count the labels.

    For sequence targets (``text:`` data) the counts are of target tokens, as in ``run.json``.
    """
    spec = parse_partition_spec(scheme)
    train = load_data(parse_data_spec(data), seed, test_fraction).train
    parts = partition(train.y, workers, spec, seed)
    summary = partition_summary(train.y, parts, train.n_classes)
    labels, counts = _grouped(np.array(summary["class_counts"], dtype=np.int64))
    title = f"{train.name}, {workers} workers, {spec} partition, seed {seed}"
    return PartitionView(title, labels, counts, np.array(summary["sizes"], dtype=np.int64))


def _grouped(counts: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The label names and counts, the rarest labels beyond :data:`MAX_LABELS` as ``other``."""
    n_labels = counts.shape[1]
    if n_labels <= MAX_LABELS:
        return [str(c) for c in range(n_labels)], counts
    kept = np.sort(np.argsort(-counts.sum(axis=0), kind="stable")[: MAX_LABELS - 1])
    rest = np.setdiff1d(np.arange(n_labels), kept)
    grouped = np.column_stack([counts[:, kept], counts[:, rest].sum(axis=1)])
    return [*(str(c) for c in kept), OTHER], grouped


def partition_table(view: PartitionView) -> Table:
    """One row per worker: its shard size and its count of each label."""
    table = Table(title=view.title)
    for header in ("worker", "examples", *(f"label {name}" for name in view.labels)):
        table.add_column(header, justify="right")
    for w, (size, row) in enumerate(zip(view.sizes, view.counts, strict=True)):
        table.add_row(str(w), f"{size:,}", *(f"{c:,}" for c in row))
    return table


def plot_partition(view: PartitionView, path: Path) -> None:
    """Save the stacked label histogram per worker beside the shard sizes as a PNG."""
    workers = np.arange(view.sizes.size)
    figure = Figure(figsize=(max(8.0, 3.0 + 0.5 * workers.size), 4.2), layout="constrained")
    mix, sizes = figure.subplots(1, 2, width_ratios=(3, 2))
    shares = view.counts / np.maximum(view.counts.sum(axis=1, keepdims=True), 1)
    bottom = np.zeros(workers.size)
    colours = [*TABLEAU_COLORS]
    for j, name in enumerate(view.labels):
        colour = "lightgray" if name == OTHER else colours[j % len(colours)]
        mix.bar(workers, shares[:, j], bottom=bottom, color=colour, label=name)
        bottom += shares[:, j]
    mix.set(xlabel="Worker", ylabel="Share of its examples", title="Labels per worker")
    mix.legend(title="label", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    sizes.bar(workers, view.sizes, color="tab:gray")
    sizes.set(xlabel="Worker", ylabel="Examples", title="Shard sizes")
    for ax in (mix, sizes):
        ax.set_xticks(workers)
    figure.suptitle(view.title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
