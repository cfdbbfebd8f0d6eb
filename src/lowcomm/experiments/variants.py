"""Variants of an algorithm in a comparison: ``sgd[lr=0.1,momentum=0.9]`` and grids of settings.

A variant is an algorithm name with optional settings in brackets. Its *label* is the
canonical text ``NAME[KEY=VALUE,...]`` (settings in the order given, values written back from
their parsed YAML form, so ``sgd[ lr = 1e-1 ]`` is labelled ``sgd[lr=0.1]``); a plain name is
its own label. Labels name the summary rows, the legend entries and (through
:func:`folder_name`) the run folders. Inside the brackets a piece without ``=`` continues the
previous value, so ``sgd[lr=inv:0.1,100]`` sets ``lr`` to ``inv:0.1,100``.

A grid (``{"lr": [0.1, 0.01]}``) expands every variant whose algorithm takes the setting, and
that does not set it in its brackets, into one variant per value (the product over several
keys); the other variants stay once, unchanged.

The options of the compared algorithms come from ``KEY`` and ``ALGORITHM.KEY`` settings
(:func:`resolve_options`); a variant's own settings win over both.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from lowcomm.algorithms.registry import REGISTRY, option_names, registered
from lowcomm.core.errors import InvalidConfigError
from lowcomm.experiments.config import load_yaml

OWNER = "lowcomm compare"
_SHAPE = re.compile(r"\s*([^\[\]]*?)\s*(?:\[([^\[\]]*)\])?\s*")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")
_TOP_COMMA = re.compile(r",(?![^\[]*\])")
SHAPE = "NAME or NAME[KEY=VALUE,...] with balanced brackets"


@dataclass(frozen=True)
class Variant:
    """An algorithm and the settings its brackets (or a grid) give it."""

    algorithm: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``NAME`` alone, or ``NAME[KEY=VALUE,...]``."""
        if not self.settings:
            return self.algorithm
        pairs = ",".join(f"{key}={render(value)}" for key, value in self.settings.items())
        return f"{self.algorithm}[{pairs}]"


def render(value: Any) -> str:
    """A setting's value as YAML text that reads back as ``value`` (``0.1``, ``true``, ``.inf``)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float) and not math.isfinite(value):
        return {math.inf: ".inf", -math.inf: "-.inf"}.get(value, ".nan")
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    return text if _reads_as(text, value) else json.dumps(text)


def _reads_as(text: str, value: Any) -> bool:
    """Whether YAML reads ``text`` back as ``value``."""
    try:
        return bool(load_yaml(text) == value)
    except yaml.YAMLError:
        return False


def folder_name(label: str) -> str:
    """A run folder name for ``label``: the label itself for a plain name.

    ``sgd[lr=0.1,momentum=0.9]`` gives ``sgd_lr=0.1_momentum=0.9``: brackets and commas become
    ``_`` and any other character but letters, digits and ``. _ = + -`` becomes ``-``.
    """
    flat = label.replace("[", "_").replace(",", "_").removesuffix("]")
    return _UNSAFE.sub("-", flat)


def parse_variant(text: str) -> Variant:
    """Read ``NAME`` or ``NAME[KEY=VALUE,...]``; each setting must be one the algorithm takes.

    Raises:
        InvalidConfigError: unbalanced brackets, an unknown algorithm, a piece that is not
            ``KEY=VALUE``, a value that is not YAML, or a setting named twice or unknown.
    """
    shape = _SHAPE.fullmatch(text)
    if shape is None:
        raise InvalidConfigError("algorithms", OWNER, SHAPE, text)
    name, inside = shape[1], shape[2]
    registered(name)
    settings: dict[str, Any] = {}
    pairs = _pairs(text, inside) if inside is not None and inside.strip() else []
    allowed = option_names(name)
    for key, value in pairs:
        if key in settings or key not in allowed:
            known = f"a setting of {name} (one of {', '.join(allowed)})"
            want = "a setting named once" if key in settings else known
            raise InvalidConfigError(key, text, want, value)
        settings[key] = _value(text, key, value)
    return Variant(name, settings)


def _pairs(text: str, inside: str) -> list[tuple[str, str]]:
    """``KEY=VALUE`` pieces; a piece without ``=`` continues the previous value."""
    pairs: list[tuple[str, str]] = []
    for piece in inside.split(","):
        key, sep, value = piece.partition("=")
        if sep and key.strip():
            pairs.append((key.strip(), value.strip()))
        elif pairs and not sep:
            pairs[-1] = (pairs[-1][0], f"{pairs[-1][1]},{piece.strip()}")
        else:
            raise InvalidConfigError("algorithms", OWNER, "KEY=VALUE settings in brackets", text)
    return pairs


def _value(text: str, key: str, value: str) -> Any:
    """A bracket value as YAML (``0.1``, ``1e-3``, ``true``, ``topk:0.01``)."""
    try:
        return load_yaml(value)
    except yaml.YAMLError:
        raise InvalidConfigError(key, text, "a YAML value", value) from None


def split_list(value: Any) -> list[str]:
    """Variants from ``a,b[k=1,j=2]`` (commas inside brackets kept) or a list of strings."""
    if isinstance(value, str):
        return [item.strip() for item in _TOP_COMMA.split(value)]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value]
    raise InvalidConfigError("algorithms", OWNER, "a comma-separated list", value)


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``KEY=V1,V2,...`` strings (``--grid``) as a grid, values read as YAML."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        try:
            parsed = [load_yaml(value) for value in values.split(",")]
        except yaml.YAMLError:
            parsed = []
        if not sep or not key.strip() or not values.strip():
            parsed = []
        if not parsed:
            raise InvalidConfigError("grid", OWNER, "KEY=VALUE,VALUE,... with YAML values", item)
        grid[key.strip()] = parsed
    return grid


def merge_grid(table: Any, items: Sequence[str]) -> dict[str, list[Any]]:
    """A config file's ``grid`` table with ``--grid`` items over it, key by key."""
    if not isinstance(table, Mapping):
        raise InvalidConfigError("grid", OWNER, "a table of KEY: [VALUE, ...]", table)
    return {**table, **parse_grid(items)}


def expand(algorithms: Sequence[str], grid: Mapping[str, Any]) -> list[str]:
    """The labels of ``algorithms`` with ``grid`` expanded, in order (algorithm, then values).

    Raises:
        InvalidConfigError: a variant is malformed (:func:`parse_variant`), a grid key is
            taken by no compared algorithm, or its values are not a non-empty list.
    """
    variants = [parse_variant(text) for text in algorithms]
    names = list(dict.fromkeys(v.algorithm for v in variants))
    for key, values in grid.items():
        if not any(key in option_names(name) for name in names):
            allowed = f"a setting of at least one compared algorithm ({', '.join(names)})"
            raise InvalidConfigError(f"grid.{key}", OWNER, allowed, key)
        if not isinstance(values, list | tuple) or not values:
            raise InvalidConfigError(f"grid.{key}", OWNER, "a non-empty list of values", values)
    return [label for variant in variants for label in _grown(variant, grid)]


def _grown(variant: Variant, grid: Mapping[str, Sequence[Any]]) -> list[str]:
    """One label per combination of the grid values ``variant`` takes and does not set."""
    keys = [
        key
        for key in grid
        if key in option_names(variant.algorithm) and key not in variant.settings
    ]
    combos = itertools.product(*(grid[key] for key in keys))
    grown = [{**variant.settings, **dict(zip(keys, combo, strict=True))} for combo in combos]
    return [_readable(Variant(variant.algorithm, settings)) for settings in grown]


def _readable(variant: Variant) -> str:
    """``variant``'s label, refused unless it reads back as ``variant`` (a list value does not)."""
    try:
        same = parse_variant(variant.label) == variant
    except InvalidConfigError:
        same = False
    if not same:
        allowed = "values a label can show (numbers, words, specs such as inv:0.1,100; no lists)"
        raise InvalidConfigError("grid", OWNER, allowed, variant.label)
    return variant.label


def check_distinct(variants: Sequence[Variant]) -> None:
    """Refuse two variants with one label, or whose labels give one run folder."""
    seen: dict[str, str] = {}
    for variant in variants:
        label, folder = variant.label, folder_name(variant.label)
        if folder in seen:
            other = seen[folder]
            allowed = (
                "variants with distinct labels"
                if other == label
                else f"variants with distinct run folders ({other} and {label} give {folder})"
            )
            raise InvalidConfigError("algorithms", OWNER, allowed, label)
        seen[folder] = label


def algorithm_names(labels: Sequence[str]) -> list[str]:
    """The distinct algorithms of ``labels``, in order of first appearance."""
    return list(dict.fromkeys(parse_variant(label).algorithm for label in labels))


def check_algorithms(algorithms: Sequence[str]) -> list[Variant]:
    """Require a non-empty list of registered names and variants with distinct labels."""
    plain = [name for name in algorithms if "[" not in name]
    if not algorithms or len(set(plain)) < len(plain):
        allowed = f"distinct names from {', '.join(REGISTRY)}"
        raise InvalidConfigError("algorithms", OWNER, allowed, ",".join(algorithms))
    variants = [parse_variant(text) for text in algorithms]
    check_distinct(variants)
    return variants


def flatten_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """A config file's options with per-algorithm tables as dotted keys.

    ``{"lr": 0.1, "local-sgd": {"local_steps": 8}}`` becomes
    ``{"lr": 0.1, "local-sgd.local_steps": 8}``.
    """
    flat: dict[str, Any] = {}
    for key, value in options.items():
        if key in REGISTRY and isinstance(value, Mapping):
            flat.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            flat[key] = value
    return flat


def concerning(settings: Mapping[str, Any], algorithms: Sequence[str]) -> dict[str, Any]:
    """The settings of a config file that concern the compared ``algorithms``.

    A file may hold settings for more algorithms than a command line compares: an
    ``ALGORITHM.KEY`` of another registered algorithm, or a ``KEY`` that only other algorithms
    take, is left out. Anything else (a misspelt algorithm or setting) is kept for
    :func:`resolve_options` to refuse.
    """
    check_algorithms(algorithms)
    algorithms = algorithm_names(algorithms)
    kept: dict[str, Any] = {}
    for key, value in settings.items():
        name, dot, _ = key.partition(".")
        other = name in REGISTRY and name not in algorithms
        unused = not any(key in option_names(a) for a in algorithms)
        elsewhere = any(key in option_names(a) for a in REGISTRY)
        if (dot and other) or (not dot and unused and elsewhere):
            continue
        kept[key] = value
    return kept


def resolve_options(
    settings: Mapping[str, Any], algorithms: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Each algorithm's options from ``KEY`` and ``ALGORITHM.KEY`` settings.

    ``KEY`` goes to every compared algorithm that accepts it; ``ALGORITHM.KEY`` to that
    algorithm only, and wins over ``KEY``. Variants count as their algorithm.

    Raises:
        InvalidConfigError: an algorithm is unknown, a ``KEY`` fits no compared algorithm, or
            an ``ALGORITHM.KEY`` names an algorithm that is not compared.
    """
    check_algorithms(algorithms)
    algorithms = algorithm_names(algorithms)
    resolved: dict[str, dict[str, Any]] = {name: {} for name in algorithms}
    specific = {key: value for key, value in settings.items() if "." in key}
    for key, value in settings.items():
        if key in specific:
            continue
        takers = [name for name in algorithms if key in option_names(name)]
        if not takers:
            allowed = f"a setting of at least one compared algorithm ({', '.join(algorithms)})"
            raise InvalidConfigError(key, OWNER, allowed, value)
        for name in takers:
            resolved[name][key] = value
    for key, value in specific.items():
        name, _, option = key.partition(".")
        if name not in resolved:
            allowed = f"KEY or ALGORITHM.KEY with ALGORITHM one of {', '.join(algorithms)}"
            raise InvalidConfigError("set", OWNER, allowed, key)
        resolved[name][option] = value
    return resolved
