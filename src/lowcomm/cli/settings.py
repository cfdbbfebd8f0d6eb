"""The settings of a command: ``--set`` values, the config file, flags and compare's lists."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
import yaml

from lowcomm.core.errors import InvalidConfigError
from lowcomm.experiments.config import RunConfig, load_yaml, read_config_file

COMPARE = "lowcomm compare"
COMPARE_KEYS = ("algorithms", "seeds", "target_loss", "options", "grid")  # compare's file only


def parse_value(text: str) -> Any:
    """A ``--set`` value as YAML (``8``, ``0.05``, ``true``, ``[1, 2]``); ``1e-3`` is a float."""
    return load_yaml(text)


def parse_sets(items: list[str], owner: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict, values parsed by :func:`parse_value`."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        malformed = InvalidConfigError("set", owner, "KEY=VALUE with a YAML value", item)
        if not sep or not key.strip():
            raise malformed
        try:
            settings[key.strip()] = parse_value(text)
        except yaml.YAMLError:
            raise malformed from None
    return settings


def _options(values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``options`` table of some settings ({} if absent)."""
    options = values.get("options", {})
    if not isinstance(options, Mapping):
        raise InvalidConfigError("options", "the run config", "a table of settings", options)
    return dict(options)


def _merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Settings layered left to right; ``options`` tables are merged key by key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = {**merged, **layer, "options": {**_options(merged), **_options(layer)}}
    return merged


def _flags(ctx: typer.Context) -> dict[str, Any]:
    """The config fields given as flags."""
    return {
        name: value
        for name, value in ctx.params.items()
        if name in RunConfig.model_fields and value is not None
    }


def _file(config_file: Path | None) -> dict[str, Any]:
    """The settings of the config file, if any."""
    return read_config_file(config_file) if config_file is not None else {}


def _names(value: Any, name: str) -> list[str]:
    """A comma-separated string or a list, as a list of stripped strings."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise InvalidConfigError(name, COMPARE, "a comma-separated list", value)
    return [item.strip() for item in items]


def _seeds(value: Any) -> list[int]:
    """Seeds from ``0,1,2`` or a list of integers."""
    items = _names(value, "seeds") if isinstance(value, str) else value
    try:
        seeds = [int(item) for item in items]
    except (TypeError, ValueError):
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise InvalidConfigError("seeds", COMPARE, "comma-separated integers >= 0", value)
    return seeds
