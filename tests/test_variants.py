"""Variants (``sgd[lr=0.1]``) and grids in a comparison: labels, folders, options, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import lowcomm
from lowcomm.core.errors import InvalidConfigError
from lowcomm.experiments.variants import (
    Variant,
    expand,
    folder_name,
    merge_grid,
    parse_variant,
    split_list,
)
from tests.test_cli import lowcomm as cli
from tests.test_cli import one_error_line

TINY: dict[str, Any] = {"data": "synthetic-logistic:80,3", "workers": 2, "rounds": 3}
SGD = "lr, batch_size, momentum, nesterov, reduce, asynchronous, sampling, order, projection, "
SGD += "unit, compressor, error_feedback"


@pytest.mark.parametrize(
    ("text", "label", "settings"),
    [
        ("sgd", "sgd", {}),
        (" sgd[ lr = 1e-1 ] ", "sgd[lr=0.1]", {"lr": 0.1}),
        ("sgd[lr=0.5,momentum=0.9]", "sgd[lr=0.5,momentum=0.9]", {"lr": 0.5, "momentum": 0.9}),
        ("sgd[lr=inv:0.1,100,nesterov=true]", None, {"lr": "inv:0.1,100", "nesterov": True}),
        ("local-sgd[local_steps=8]", None, {"local_steps": 8}),
    ],
)
def test_a_variant_reads_its_settings_and_has_a_canonical_label(
    text: str, label: str | None, settings: dict[str, Any]
) -> None:
    variant = parse_variant(text)
    assert variant.settings == settings
    assert variant.label == (label or text)
    assert parse_variant(variant.label) == variant


def test_labels_write_values_that_read_back_the_same() -> None:
    variant = Variant("sgd", {"lr": 1e-05, "compressor": "0.5", "nesterov": False})
    assert variant.label == 'sgd[lr=1e-05,compressor="0.5",nesterov=false]'
    assert parse_variant(variant.label) == variant


def test_a_list_splits_at_commas_outside_brackets() -> None:
    assert split_list("sgd[lr=0.1,momentum=0.9], sasg,gd") == [
        "sgd[lr=0.1,momentum=0.9]",
        "sasg",
        "gd",
    ]
    assert split_list("sgd,,gd") == ["sgd", "", "gd"]
    assert split_list(["sgd[lr=0.1]", " gd"]) == ["sgd[lr=0.1]", "gd"]


def test_run_folders_are_file_system_safe_and_plain_names_unchanged() -> None:
    assert folder_name("local-sgd") == "local-sgd"
    assert folder_name("sgd[lr=0.1,momentum=0.9]") == "sgd_lr=0.1_momentum=0.9"
    assert (
        folder_name('sgd[lr=inv:0.1,100,compressor="a/b"]') == "sgd_lr=inv-0.1_100_compressor=-a-b-"
    )


def test_a_grid_expands_each_algorithm_that_takes_the_key_in_order() -> None:
    grid = {"lr": [0.1, 0.01], "momentum": [0.0, 0.9]}
    labels = expand(["gd", "sgd", "sasg[lr=0.3]", "local-sgd"], grid)
    assert labels == [
        "gd",
        "sgd[lr=0.1,momentum=0.0]",
        "sgd[lr=0.1,momentum=0.9]",
        "sgd[lr=0.01,momentum=0.0]",
        "sgd[lr=0.01,momentum=0.9]",
        "sasg[lr=0.3]",  # its own lr wins over the grid; it takes no momentum
        "local-sgd[lr=0.1]",
        "local-sgd[lr=0.01]",
    ]
    assert expand(["sgd", "gd"], {}) == ["sgd", "gd"]


def test_command_line_grid_items_override_the_file_grid_key_by_key() -> None:
    grid = merge_grid({"lr": [1, 2], "momentum": [0.5]}, ["lr=0.1,1e-2", "batch_size=4"])
    assert grid == {"lr": [0.1, 0.01], "momentum": [0.5], "batch_size": [4]}


@pytest.mark.parametrize(
    ("algorithms", "grid", "message"),
    [
        (
            ["sgd[lr=0.1"],
            {},
            "The 'algorithms' parameter of lowcomm compare must be NAME or NAME[KEY=VALUE,...] "
            "with balanced brackets. Got 'sgd[lr=0.1'.",
        ),
        (
            ["sgd[lr=0.1]]"],
            {},
            "The 'algorithms' parameter of lowcomm compare must be NAME or NAME[KEY=VALUE,...] "
            "with balanced brackets. Got 'sgd[lr=0.1]]'.",
        ),
        (
            ["sgd[rate=0.1]"],
            {},
            f"The 'rate' parameter of sgd[rate=0.1] must be a setting of sgd (one of {SGD}). "
            "Got '0.1'.",
        ),
        (
            ["sgd[lr=0.1,lr=0.2]"],
            {},
            "The 'lr' parameter of sgd[lr=0.1,lr=0.2] must be a setting named once. Got '0.2'.",
        ),
        (
            ["sgd[0.1]"],
            {},
            "The 'algorithms' parameter of lowcomm compare must be KEY=VALUE settings in "
            "brackets. Got 'sgd[0.1]'.",
        ),
        (
            ["sgd", "gd"],
            {"local_steps": [1, 2]},
            "The 'grid.local_steps' parameter of lowcomm compare must be a setting of at least "
            "one compared algorithm (sgd, gd). Got 'local_steps'.",
        ),
        (
            ["sgd"],
            {"lr": 0.1},
            "The 'grid.lr' parameter of lowcomm compare must be a non-empty list of values. "
            "Got 0.1.",
        ),
        (
            ["lasg"],
            {"xi": [[0.1, 0.2]]},
            "The 'grid' parameter of lowcomm compare must be values a label can show (numbers, "
            "words, specs such as inv:0.1,100; no lists). Got 'lasg[xi=[0.1, 0.2]]'.",
        ),
    ],
)
def test_malformed_variants_and_grids_are_one_line_errors(
    algorithms: list[str], grid: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidConfigError) as caught:
        expand(algorithms, grid)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("algorithms", "message"),
    [
        (
            ["sgd[lr=0.1]", "sgd[lr=1e-1]"],
            "The 'algorithms' parameter of lowcomm compare must be variants with distinct "
            "labels. Got 'sgd[lr=0.1]'.",
        ),
        (
            ["sgd[compressor=a/b]", "sgd[compressor=a:b]"],
            "The 'algorithms' parameter of lowcomm compare must be variants with distinct run "
            "folders (sgd[compressor=a/b] and sgd[compressor=a:b] give sgd_compressor=a-b). "
            "Got 'sgd[compressor=a:b]'.",
        ),
        (
            ["sgd[lr=-1]"],
            "sgd[lr=-1]: The 'lr' parameter of sgd must be a finite number > 0, or const:ETA, "
            "inv:ETA0,T0, step:ETA0,GAMMA,EVERY or cosine:ETA0,K. Got -1.",
        ),
    ],
)
def test_a_comparison_refuses_clashing_or_invalid_variants_before_writing(
    tmp_path: Path, algorithms: list[str], message: str
) -> None:
    with pytest.raises(InvalidConfigError) as caught:
        lowcomm.compare(algorithms, out=tmp_path / "out", **TINY)
    assert str(caught.value) == message
    assert not (tmp_path / "out").exists()


def test_variants_of_one_algorithm_run_with_their_settings_first(tmp_path: Path) -> None:
    settings = {"lr": 0.05, "sgd": {"momentum": 0.5, "lr": 0.2}}
    comparison = lowcomm.compare(
        ["sgd[momentum=0.9]", "sgd", "gd"],
        settings=settings,
        grid={"lr": [0.3, 0.03]},
        out=tmp_path,
        **TINY,
    )
    labels = ["sgd[momentum=0.9,lr=0.3]", "sgd[momentum=0.9,lr=0.03]", "sgd[lr=0.3]"]
    labels += ["sgd[lr=0.03]", "gd"]
    assert comparison.summary["algorithm"].tolist() == labels
    assert list(comparison.runs) == labels
    options = json.loads((tmp_path / "compare.json").read_text())["options"]
    assert options == {
        "sgd[momentum=0.9,lr=0.3]": {"lr": 0.3, "momentum": 0.9},
        "sgd[momentum=0.9,lr=0.03]": {"lr": 0.03, "momentum": 0.9},
        "sgd[lr=0.3]": {"lr": 0.3, "momentum": 0.5},
        "sgd[lr=0.03]": {"lr": 0.03, "momentum": 0.5},
        "gd": {},
    }
    alone = lowcomm.run("sgd", settings={"lr": 0.03, "momentum": 0.9}, **TINY)
    assert alone is not None
    pd.testing.assert_frame_equal(
        comparison.runs["sgd[momentum=0.9,lr=0.03]"][0].history.drop(columns="wall_time"),
        alone.history.drop(columns="wall_time"),
    )
    assert (tmp_path / "sgd_momentum=0.9_lr=0.03" / "seed0" / "run.json").is_file()


def test_the_command_line_compares_variants_and_redraws_them(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    flags = ["--data", "synthetic-logistic:80,3", "--workers", "2", "--rounds", "3", "-q"]
    variants = "sgd[lr=0.5,momentum=0.9],sgd[lr=0.05]"
    done = cli("compare", "--algorithms", variants, *flags, "--out", out)
    assert done.exit_code == 0, done.output
    summary = pd.read_csv(out / "summary.csv")
    assert summary["algorithm"].tolist() == ["sgd[lr=0.5,momentum=0.9]", "sgd[lr=0.05]"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "sgd_lr=0.05",
        "sgd_lr=0.5_momentum=0.9",
    ]
    redrawn = cli("plot", out, "--out", tmp_path / "again.png")
    assert redrawn.exit_code == 0, redrawn.output
    assert redrawn.stdout.splitlines()[0] == str(tmp_path / "again.png")


def test_a_config_file_holds_variants_and_a_grid(tmp_path: Path) -> None:
    config = tmp_path / "cmp.yaml"
    config.write_text(
        'algorithms: ["sgd[momentum=0.9]", gd]\ngrid: {lr: [0.5, 0.05]}\n'
        "data: synthetic-logistic:80,3\nworkers: 2\nrounds: 2\n"
    )
    done = cli("compare", config, "--grid", "lr=0.2", "-q", "--out", tmp_path / "out")
    assert done.exit_code == 0, done.output
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary["algorithm"].tolist() == ["sgd[momentum=0.9,lr=0.2]", "gd"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--algorithms", "sgd[lr=0.1,sasg"],
            "error: The 'algorithms' parameter of lowcomm compare must be NAME or "
            "NAME[KEY=VALUE,...] with balanced brackets. Got 'sgd[lr=0.1'.",
        ),
        (
            ["--grid", "lr"],
            "error: The 'grid' parameter of lowcomm compare must be KEY=VALUE,VALUE,... with "
            "YAML values. Got 'lr'.",
        ),
    ],
)
def test_command_line_variant_errors_are_one_line(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    done = cli("compare", *flags, "--out", tmp_path / "out")
    assert done.exit_code == 2
    assert one_error_line(done) == message
    assert not (tmp_path / "out").exists()


def test_the_printed_table_shows_each_variant_label_not_rich_markup(tmp_path: Path) -> None:
    flags = ["--data", "synthetic-logistic:80,3", "--workers", "2", "--rounds", "3"]
    done = cli("compare", "--algorithms", "sgd[lr=0.5],sgd[lr=0.05]", *flags, "--out", tmp_path)
    assert done.exit_code == 0, done.output
    rows = [line.split("│")[1].strip() for line in done.stdout.splitlines() if "│" in line]
    assert rows == ["sgd[lr=0.5]", "sgd[lr=0.05]"]
