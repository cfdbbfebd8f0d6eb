"""Construction-time checks of configuration values, with one message template."""

from __future__ import annotations

import math
from collections.abc import Collection

from lowcomm.core.errors import InvalidConfigError


def positive(owner: str, name: str, value: float) -> None:
    """Require a finite number > 0."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise InvalidConfigError(name, owner, "a finite number > 0", value)


def at_least(owner: str, name: str, value: int, low: int) -> None:
    """Require an integer >= ``low``."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise InvalidConfigError(name, owner, f"an integer >= {low}", value)


def in_interval(
    owner: str, name: str, value: float, low: float, high: float, closed_high: bool = False
) -> None:
    """Require a number in [low, high) (or [low, high] when ``closed_high``)."""
    ok = (
        isinstance(value, int | float)
        and low <= value
        and (value <= high if closed_high else value < high)
    )
    if not ok:
        bracket = "]" if closed_high else ")"
        raise InvalidConfigError(name, owner, f"a number in [{low}, {high}{bracket}", value)


def one_of(owner: str, name: str, value: object, allowed: Collection[object]) -> None:
    """Require one of ``allowed``."""
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise InvalidConfigError(name, owner, f"one of {choices}", value)
