"""``lowcomm partition``: the table and figure of a partition, the same split a run trains on."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

import lowcomm
from lowcomm.cli import app
from lowcomm.experiments.partition_view import MAX_LABELS, OTHER, _grouped

SPEC = "dirichlet:0.3,min_size=20"


def table_rows(stdout: str) -> list[list[int]]:
    """The body rows of the rich table: worker, examples, then one count per label."""
    rows = [line.strip("│ ").split("│") for line in stdout.splitlines() if line.startswith("│")]
    return [[int(cell.replace(",", "")) for cell in row] for row in rows]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG from its header."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_the_table_is_the_split_a_run_trains_on(tmp_path: Path) -> None:
    figure = tmp_path / "figs" / "split.png"
    args = ["partition", "digits", "--workers", "5", "--partition", SPEC, "--seed", "2"]
    done = CliRunner().invoke(app, [*args, "--plot", str(figure)])
    assert done.exit_code == 0, done.output
    assert "digits, 5 workers, dirichlet:0.3,min_size=20 partition, seed 2" in done.stdout
    assert done.stdout.endswith(f"{figure}\n")
    lowcomm.run(
        "sgd", data="digits", workers=5, partition=SPEC, seed=2, rounds=1, out=tmp_path / "run"
    )
    saved = json.loads((tmp_path / "run" / "run.json").read_text())["partition"]
    rows = table_rows(done.stdout)
    assert [row[0] for row in rows] == [0, 1, 2, 3, 4]
    assert [row[1] for row in rows] == saved["sizes"]
    assert [row[2:] for row in rows] == saved["class_counts"]
    assert min(saved["sizes"]) >= 20
    width, height = png_size(figure)
    assert width > height > 300


def test_an_impossible_min_size_is_one_error_line(tmp_path: Path) -> None:
    args = ["partition", "iris", "--workers", "4", "--partition", "dirichlet:1,min_size=40"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2
    assert done.stderr == (
        "error: The 'partition' parameter of lowcomm run must be a min_size with "
        "4 * min_size <= 112 (the examples). Got 'dirichlet:1,min_size=40'.\n"
    )
    assert done.stdout == ""


def test_labels_beyond_the_limit_are_summed_as_other() -> None:
    counts = np.arange(2 * (MAX_LABELS + 2)).reshape(2, MAX_LABELS + 2)
    counts[:, 0] = 100  # label 0 is frequent, labels 1, 2 and 3 the rarest
    names, grouped = _grouped(counts)
    assert names == ["0", *(str(c) for c in range(4, MAX_LABELS + 2)), OTHER]
    assert grouped[:, -1].tolist() == [1 + 2 + 3, 13 + 14 + 15]
    assert grouped.sum() == counts.sum() and grouped.shape == (2, MAX_LABELS)


def test_few_labels_are_kept_as_they_are() -> None:
    counts = np.array([[3, 0], [1, 2]])
    names, grouped = _grouped(counts)
    assert names == ["0", "1"] and grouped is counts
