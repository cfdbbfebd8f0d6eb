"""Construction-time checks of configuration values, the common constraints as functions."""

from __future__ import annotations

from collections.abc import Collection

from lowcomm.core.constraints import POSITIVE, Interval, OneOf, require


def positive(owner: str, name: str, value: float) -> None:
    """Require a finite number > 0."""
    require(POSITIVE, owner, name, value)


def at_least(owner: str, name: str, value: int, low: int) -> None:
    """Require an integer >= ``low``."""
    require(Interval(int, low), owner, name, value)


def in_interval(
    owner: str, name: str, value: float, low: float, high: float, closed_high: bool = False
) -> None:
    """Require a number in [low, high) (or [low, high] when ``closed_high``)."""
    require(Interval(float, low, high, "both" if closed_high else "left"), owner, name, value)


def one_of(owner: str, name: str, value: object, allowed: Collection[object]) -> None:
    """Require one of ``allowed``."""
    require(OneOf(tuple(allowed)), owner, name, value)
