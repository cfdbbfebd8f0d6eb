"""Declared settings: validation from the declarations, the descriptions and the docs tables."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lowcomm.algorithms.describe import (
    BEGIN,
    END,
    REGENERATE,
    built_in_markdown,
    describe_algorithms,
    describe_settings,
    generated_section,
    main,
)
from lowcomm.algorithms.registry import REGISTRY, build_algorithm, option_names
from lowcomm.algorithms.settings import (
    Flag,
    Interval,
    ListOf,
    NoneOr,
    OneOf,
    Setting,
    Text,
    is_asynchronous,
    settings_of,
)
from lowcomm.core.constraints import Either
from lowcomm.core.errors import InvalidConfigError

CLI_DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
ALL = [(name, s) for name, entry in REGISTRY.items() for s in settings_of(entry.config)]


def numeric(declared: Setting) -> tuple[Interval, Callable[[Any], Any]] | None:
    """The interval of a numeric setting and how one number becomes its value (xi: a list)."""
    c = declared.constraint
    if isinstance(c, Interval):
        return c, lambda v: v
    if isinstance(c, NoneOr | ListOf) and isinstance(c.inner, Interval):
        return c.inner, (lambda v: [v]) if isinstance(c, ListOf) else (lambda v: v)
    if isinstance(c, Either) and isinstance(c.first, Interval):
        return c.first, lambda v: v  # a number, or (second) a schedule string: numbers here
    return None


NUMERIC = [(name, s) for name, s in ALL if numeric(s)]


def closed_ends(interval: Interval) -> tuple[bool, bool]:
    return interval.closed in ("left", "both"), interval.closed in ("right", "both")


def inside(interval: Interval) -> st.SearchStrategy[Any]:
    left, right = closed_ends(interval)
    if interval.kind is int:
        high = None if interval.high == math.inf else int(interval.high) - (not right)
        return st.integers(min_value=int(interval.low) + (not left), max_value=high)
    return st.floats(
        min_value=interval.low, max_value=interval.high, exclude_min=not left, exclude_max=not right
    )


def outside(interval: Interval) -> st.SearchStrategy[Any]:
    left, right = closed_ends(interval)
    if interval.kind is int:
        below = st.integers(max_value=int(interval.low) - left)
        return below | st.floats() | st.booleans()
    below = st.floats(max_value=interval.low, exclude_max=left, allow_nan=False)
    unbounded = interval.high == math.inf and right
    above = st.nothing() if unbounded else st.floats(min_value=interval.high, exclude_min=right)
    return below | above | st.just(math.nan)


def construct(name: str, declared: Setting, value: Any) -> Any:
    """The config of ``name`` with one setting changed (the algorithm is not built)."""
    return REGISTRY[name].config(**{declared.name: value})


def refusal(name: str, declared: Setting, value: Any) -> str:
    owner = declared.part or name
    allowed = declared.constraint.allowed
    return f"The '{declared.name}' parameter of {owner} must be {allowed}. Got {value!r}."


def test_numeric_settings_cover_every_algorithm_and_the_parts() -> None:
    # hogwild-ib's settings are all schedules and choices
    assert {name for name, _ in NUMERIC} == set(REGISTRY) - {"hogwild-ib"}
    assert ("gd", "shrink", "line search") in {(n, s.name, s.part) for n, s in NUMERIC}
    assert len(NUMERIC) >= 35


@pytest.mark.parametrize(("name", "declared"), NUMERIC, ids=[f"{n}-{s.name}" for n, s in NUMERIC])
def test_values_inside_the_declared_range_are_accepted(name: str, declared: Setting) -> None:
    interval, wrap = numeric(declared)  # type: ignore[misc]

    @given(inside(interval))
    def check(value: Any) -> None:
        config = construct(name, declared, wrap(value))
        assert getattr(config, declared.name) == wrap(value)

    check()


@pytest.mark.parametrize(("name", "declared"), NUMERIC, ids=[f"{n}-{s.name}" for n, s in NUMERIC])
def test_values_outside_the_declared_range_are_refused(name: str, declared: Setting) -> None:
    interval, wrap = numeric(declared)  # type: ignore[misc]

    @given(outside(interval))
    def check(value: Any) -> None:
        with pytest.raises(InvalidConfigError) as caught:
            construct(name, declared, wrap(value))
        assert str(caught.value) == refusal(name, declared, wrap(value))

    check()


WRONG: dict[type, Any] = {
    OneOf: "nope",
    Flag: 1,
    Text: 5,
    NoneOr: "x",
    ListOf: 0.5,
    Either: -1.0,
}
OTHER = [(name, s) for name, s in ALL if not numeric(s) or isinstance(s.constraint, Either)]


@pytest.mark.parametrize(("name", "declared"), OTHER, ids=[f"{n}-{s.name}" for n, s in OTHER])
def test_choices_flags_and_texts_refuse_other_values(name: str, declared: Setting) -> None:
    value = WRONG[type(declared.constraint)]
    with pytest.raises(InvalidConfigError) as caught:
        build_algorithm(name, {declared.name: value})
    assert str(caught.value) == refusal(name, declared, value)


def test_declared_defaults_are_the_config_defaults() -> None:
    for name, entry in REGISTRY.items():
        config = entry.config()
        assert {s.name: s.default for s in settings_of(entry.config)} == vars(config), name
        assert entry.config.ABOUT.name == name


@pytest.mark.parametrize(
    ("name", "switch"),
    [("sgd", {"asynchronous": True}), ("async-msgd", {"delay": "const:1"})],
)
def test_declared_timing_is_how_the_algorithm_runs(name: str, switch: dict[str, Any]) -> None:
    for values in ({}, switch):
        config = REGISTRY[name].config(**values)
        assert is_asynchronous(config) == (not build_algorithm(name, values).synchronous)
    assert is_asynchronous(REGISTRY[name].config()) != is_asynchronous(
        REGISTRY[name].config(**switch)
    )
    for other, entry in REGISTRY.items():
        assert is_asynchronous(entry.config()) == (not build_algorithm(other, {}).synchronous)


def test_the_listing_has_every_algorithm_with_what_it_sends() -> None:
    rows = {row.name: row for row in describe_algorithms()}
    assert list(rows) == list(REGISTRY)
    assert rows["sgd"].timing == "synchronous; asynchronous with asynchronous=true"
    assert rows["async-msgd"].timing == (
        "asynchronous (with delay=engine, the default); synchronous otherwise"
    )
    assert rows["hogwild-ib"].timing == "asynchronous"
    assert rows["giant"].timing == "synchronous"
    assert all(row.summary and row.up and row.down for row in rows.values())


def test_setting_rows_give_type_default_range_and_meaning() -> None:
    rows = {row.setting: row for row in describe_settings("sasg")}
    assert list(rows) == option_names("sasg")
    assert rows["density"][1:4] == ("float", "0.01", "a number in [1e-12, 1.0]")
    assert rows["xi"][1:4] == ("list of float", "[]", "a list, each a number in [0.0, inf]")
    assert rows["sampling"].default == "reshuffle"
    lag = {row.setting: row for row in describe_settings("lag")}
    assert lag["threshold"][1:3] == ("float or null", "null")
    sgd = {row.setting: row for row in describe_settings("sgd")}
    assert sgd["asynchronous"][1:3] == ("bool", "false")
    assert sgd["lr"][1:3] == ("float or str", "0.1")
    for name in REGISTRY:
        assert all(row.meaning for row in describe_settings(name))
    with pytest.raises(InvalidConfigError, match="'algorithm' parameter of lowcomm must be one"):
        describe_settings("adam")


def test_docs_tables_are_generated_from_the_declarations() -> None:
    text = CLI_DOCS.read_text()
    section = generated_section(text)
    assert section == built_in_markdown(), f"docs/cli.md is stale: run {REGENERATE}"
    parts = section.split("\n#### ")
    assert [p.split("`")[1] for p in parts[1:]] == list(REGISTRY)
    for name, part in zip(REGISTRY, parts[1:], strict=True):
        for row in describe_settings(name):
            assert f"| `{row.setting}` | {row.type} | `{row.default}` |" in part, (name, row)


def test_regenerating_rewrites_only_the_marked_section(tmp_path: Path) -> None:
    page = tmp_path / "cli.md"
    page.write_text(f"# Before\n\n{BEGIN}\nstale\n{END}\n\nAfter\n")
    main(["--write", str(page)])
    assert page.read_text() == f"# Before\n\n{BEGIN}\n{built_in_markdown()}{END}\n\nAfter\n"
    page.write_text("no markers\n")
    with pytest.raises(SystemExit):
        main(["--write", str(page)])
    assert page.read_text() == "no markers\n"
