"""The algorithms and their settings, described from their declarations: rows and Markdown.

:func:`describe_algorithms`, :func:`describe_algorithm`, :func:`describe_settings` and
:func:`describe_participation` return text for a listing (``lowcomm algorithms``,
``lowcomm algorithms NAME``);
:func:`settings_markdown` renders the same rows as the tables of docs/cli.md, between
:data:`BEGIN` and :data:`END`. Regenerate them with::

    python -m lowcomm.algorithms.describe --write docs/cli.md
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from lowcomm.algorithms.registry import BUILT_IN, REGISTRY, registered
from lowcomm.algorithms.settings import (
    ASYNCHRONOUS_REFUSAL,
    UNDECLARED_REFUSAL,
    AlgorithmSettings,
    OnlyWhen,
    When,
    only_when,
    settings_of,
)

BEGIN = "<!-- settings:begin -->"
END = "<!-- settings:end -->"
REGENERATE = "python -m lowcomm.algorithms.describe --write docs/cli.md"
OBJECTIVE_KEY = (
    "F: the reported train_loss, the mean loss over all N training examples plus "
    "(l2/2)||x||^2; M workers, n_m examples on worker m"
)


class AlgorithmRow(NamedTuple):
    """One algorithm: name, summary, when it is (a)synchronous, what it sends and minimises."""

    name: str
    summary: str
    timing: str
    up: str
    down: str
    objective: str


class SettingRow(NamedTuple):
    """One setting: name, type, default and allowed values (as ``--set`` reads them), meaning."""

    setting: str
    type: str
    default: str
    allowed: str
    meaning: str


def yaml_text(value: object) -> str:
    """``value`` as it is written after ``--set KEY=`` (YAML): ``true``, ``null``, ``[1, 2]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(yaml_text(v) for v in value) + "]"
    return str(value)


def timing(config_class: type[AlgorithmSettings]) -> str:
    """Whether the algorithm runs synchronously or asynchronously, and which setting switches."""
    mode = config_class.ABOUT.asynchronous
    if not isinstance(mode, When):
        return "asynchronous" if mode else "synchronous"
    switch = _switch(mode)
    default = {s.name: s.default for s in settings_of(config_class)}[mode.setting]
    if default == mode.value:
        return f"asynchronous (with {switch}, the default); synchronous otherwise"
    return f"synchronous; asynchronous with {switch}"


def participation(config_class: type[AlgorithmSettings]) -> str:
    """Whether runs may sample its workers per round (``--participation``), or why not."""
    about = config_class.ABOUT
    declared, mode = about.participation, about.asynchronous
    if mode is True:
        return f"no: {ASYNCHRONOUS_REFUSAL}"
    unless = "" if mode is False else f" unless {_switch(mode)} (then asynchronous)"
    conditions = only_when(declared)
    if conditions:
        switches = " and ".join(_switch(c) for c in conditions)
        reasons = "; ".join(c.reason for c in conditions)
        return f"yes with {switches}{unless}; otherwise no: {reasons}"
    if declared is True:
        return f"yes{unless}"
    return f"no: {declared or UNDECLARED_REFUSAL}"


def _switch(condition: When | OnlyWhen) -> str:
    """``setting=value`` as ``--set`` reads it."""
    return f"{condition.setting}={yaml_text(condition.value)}"


def algorithm_row(name: str, config_class: type[AlgorithmSettings]) -> AlgorithmRow:
    """The row of algorithm ``name``, configured by ``config_class``."""
    about = config_class.ABOUT
    return AlgorithmRow(
        name, about.summary, timing(config_class), about.up, about.down, about.objective
    )


def setting_rows(config_class: type[AlgorithmSettings]) -> list[SettingRow]:
    """One row per declared setting of ``config_class``, in declaration order."""
    return [
        SettingRow(
            s.name, s.constraint.type_name, yaml_text(s.default), s.constraint.allowed, s.meaning
        )
        for s in settings_of(config_class)
    ]


def describe_algorithms() -> list[AlgorithmRow]:
    """Every registered algorithm (built in, registered or installed), in registration order."""
    return [algorithm_row(name, entry.config) for name, entry in REGISTRY.items()]


def describe_algorithm(name: str) -> AlgorithmRow:
    """The row of algorithm ``name``; an unknown name raises InvalidConfigError."""
    return algorithm_row(name, registered(name).config)


def describe_settings(name: str) -> list[SettingRow]:
    """Every setting of algorithm ``name``; an unknown name raises InvalidConfigError."""
    return setting_rows(registered(name).config)


def describe_participation(name: str) -> str:
    """Whether algorithm ``name`` takes partial participation; an unknown name is refused."""
    return participation(registered(name).config)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


def settings_markdown(configs: Mapping[str, type[AlgorithmSettings]]) -> str:
    """The Markdown of the algorithms ``configs`` (name -> config class) and their settings."""
    overview = [
        (f"`{r.name}`", r.summary, r.timing, r.up, r.down, r.objective)
        for r in (algorithm_row(name, config) for name, config in configs.items())
    ]
    header = ("algorithm", "summary", "runs", "sends up", "sends down", "minimises")
    lines = [f"<!-- generated by `{REGENERATE}`: edit the declarations, not this -->", ""]
    lines += _table(header, overview)
    for name, config in configs.items():
        rows = [
            (f"`{r.setting}`", r.type, f"`{r.default}`", r.allowed, r.meaning)
            for r in setting_rows(config)
        ]
        lines += ["", f"#### `{name}`", "", f"Partial participation: {participation(config)}.", ""]
        lines += _table(("setting", "type", "default", "allowed", "meaning"), rows)
    return "\n".join(lines) + "\n\n"


def built_in_markdown() -> str:
    """:func:`settings_markdown` of lowcomm's own algorithms (what docs/cli.md shows)."""
    return settings_markdown({name: config for name, (config, _) in BUILT_IN.items()})


def _bounds(text: str) -> tuple[int, int]:
    """Where the section between the lines :data:`BEGIN` and :data:`END` starts and ends."""
    begin, end = text.find(BEGIN + "\n"), text.find("\n" + END + "\n")
    if begin < 0 or end < begin:
        raise ValueError(f"no section between the lines {BEGIN} and {END}")
    return begin + len(BEGIN) + 1, end + 1


def generated_section(text: str) -> str:
    """The generated section of ``text`` (a Markdown file)."""
    start, end = _bounds(text)
    return text[start:end]


def with_section(text: str, section: str) -> str:
    """``text`` with its generated section replaced by ``section``."""
    start, end = _bounds(text)
    return text[:start] + section + text[end:]


def main(argv: list[str] | None = None) -> None:
    """Print the settings tables of the built-in algorithms, or rewrite a file's section."""
    parser = argparse.ArgumentParser(prog="python -m lowcomm.algorithms.describe")
    parser.add_argument("--write", type=Path, help="rewrite this file's generated section")
    args = parser.parse_args(argv)
    section = built_in_markdown()
    if args.write is None:
        print(section, end="")
        return
    try:
        args.write.write_text(with_section(args.write.read_text(), section))
    except (OSError, ValueError) as exc:
        parser.error(f"{args.write}: {exc}")


if __name__ == "__main__":
    main()
