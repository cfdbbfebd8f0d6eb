"""``lowcomm algorithms``: every algorithm, and every setting of each with its default."""

from __future__ import annotations

import pytest

from lowcomm.algorithms.describe import yaml_text
from lowcomm.algorithms.registry import BUILT_IN, REGISTRY
from lowcomm.algorithms.settings import settings_of
from tests.test_cli import lowcomm, one_error_line


def cell_lines(output: str) -> list[list[str]]:
    """The rows of a rich table printed as text, split into stripped cells."""
    return [
        [c.strip() for c in line.split("│")[1:-1]]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def test_the_listing_names_every_registered_algorithm_once() -> None:
    result = lowcomm("algorithms")
    assert result.exit_code == 0, result.output
    first = [cells[0] for cells in cell_lines(result.stdout) if cells[0]]
    assert first == list(REGISTRY)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_setting_is_listed_with_its_declared_default(name: str) -> None:
    result = lowcomm("algorithms", name)
    assert result.exit_code == 0, result.output
    rows = {cells[0]: cells for cells in cell_lines(result.stdout) if cells[0]}
    config_class = REGISTRY[name].config
    defaults = config_class()
    assert list(rows) == [s.name for s in settings_of(config_class)]
    for setting, cells in rows.items():
        assert cells[2] == yaml_text(getattr(defaults, setting)), setting


def test_an_unknown_algorithm_is_one_error() -> None:
    result = lowcomm("algorithms", "adam")
    assert result.exit_code == 2
    assert "'algorithm' parameter of lowcomm must be one of sgd" in one_error_line(result)


@pytest.mark.parametrize("name", list(BUILT_IN))
def test_every_built_in_algorithm_says_what_it_minimises(name: str) -> None:
    objective = BUILT_IN[name][0].ABOUT.objective
    assert objective != "(not declared)"
    result = lowcomm("algorithms", name)
    assert result.exit_code == 0, result.output
    assert " ".join(result.stdout.split()).count(f"{name} minimises {objective}") == 1
