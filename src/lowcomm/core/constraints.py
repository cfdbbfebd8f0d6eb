"""The values a parameter allows, as data: checked, and described in words for messages and docs.

scikit-learn's parameter constraints: an :class:`Interval` of integers or numbers, one of fixed
options (:class:`OneOf`), a boolean (:class:`Flag`), a string in a small language
(:class:`Text`), ``None`` or a value (:class:`NoneOr`), a list of values (:class:`ListOf`), one
of two kinds (:class:`Either`).
:func:`require` raises :class:`~lowcomm.core.errors.InvalidConfigError` with the constraint's
description for a value it does not accept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from lowcomm.core.errors import InvalidConfigError

Closed = Literal["left", "right", "both", "neither"]


class Constraint(Protocol):
    """The values a parameter allows."""

    @property
    def type_name(self) -> str:
        """The values' type, in words (``float``, ``list of float``)."""
        ...

    @property
    def allowed(self) -> str:
        """The allowed values, in words: what an error message says the parameter must be."""
        ...

    def accepts(self, value: object) -> bool:
        """Whether ``value`` is allowed."""
        ...


@dataclass(frozen=True)
class Interval:
    """Integers (``kind=int``, never booleans) or numbers from ``low`` to ``high``.

    ``closed`` says which ends belong to the interval; an open right end at infinity also
    refuses infinity, so ``Interval(float, 0, math.inf, closed="neither")`` is a finite number
    > 0.
    """

    kind: type[int] | type[float]
    low: float
    high: float = math.inf
    closed: Closed = "left"

    @property
    def type_name(self) -> str:  # noqa: D102
        return self.kind.__name__

    @property
    def allowed(self) -> str:  # noqa: D102
        left, right = self.closed in ("left", "both"), self.closed in ("right", "both")
        if self.kind is int and left and self.high == math.inf:
            return f"an integer >= {self.low}"
        if self.kind is float and not left and self.high == math.inf:
            return f"a finite number > {self.low}"
        what = "an integer" if self.kind is int else "a number"
        opening, closing = "[" if left else "(", "]" if right else ")"
        return f"{what} in {opening}{self.low}, {self.high}{closing}"

    def accepts(self, value: object) -> bool:  # noqa: D102
        if self.kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
            return False
        if not isinstance(value, int | float):
            return False
        above = self.low <= value if self.closed in ("left", "both") else self.low < value
        below = value <= self.high if self.closed in ("right", "both") else value < self.high
        return above and below


POSITIVE = Interval(float, 0, math.inf, closed="neither")
NON_NEGATIVE = Interval(float, 0.0, math.inf)


@dataclass(frozen=True)
class OneOf:
    """One of a fixed tuple of options."""

    options: tuple[object, ...]

    @property
    def type_name(self) -> str:  # noqa: D102
        return " or ".join(dict.fromkeys(type(option).__name__ for option in self.options))

    @property
    def allowed(self) -> str:  # noqa: D102
        return "one of " + ", ".join(repr(option) for option in self.options)

    def accepts(self, value: object) -> bool:  # noqa: D102
        return value in self.options


@dataclass(frozen=True)
class Flag:
    """A boolean."""

    @property
    def type_name(self) -> str:  # noqa: D102
        return "bool"

    @property
    def allowed(self) -> str:  # noqa: D102
        return "true or false"

    def accepts(self, value: object) -> bool:  # noqa: D102
        return isinstance(value, bool)


@dataclass(frozen=True)
class Text:
    """A string in a small language (``const:S``), checked by ``parse``, which raises ValueError.

    ``allowed`` describes the language in words.
    """

    allowed: str
    parse: Callable[[str], object]

    @property
    def type_name(self) -> str:  # noqa: D102
        return "str"

    def accepts(self, value: object) -> bool:  # noqa: D102
        if not isinstance(value, str):
            return False
        try:
            self.parse(value)
        except ValueError:
            return False
        return True


@dataclass(frozen=True)
class NoneOr:
    """``None`` (YAML ``null``: an automatic choice) or a value ``inner`` allows."""

    inner: Constraint

    @property
    def type_name(self) -> str:  # noqa: D102
        return f"{self.inner.type_name} or null"

    @property
    def allowed(self) -> str:  # noqa: D102
        return f"null or {self.inner.allowed}"

    def accepts(self, value: object) -> bool:  # noqa: D102
        return value is None or self.inner.accepts(value)


@dataclass(frozen=True)
class ListOf:
    """A list (or tuple) of values that ``inner`` allows."""

    inner: Constraint

    @property
    def type_name(self) -> str:  # noqa: D102
        return f"list of {self.inner.type_name}"

    @property
    def allowed(self) -> str:  # noqa: D102
        return f"a list, each {self.inner.allowed}"

    def accepts(self, value: object) -> bool:  # noqa: D102
        return isinstance(value, list | tuple) and all(self.inner.accepts(v) for v in value)


@dataclass(frozen=True)
class Either:
    """A value that ``first`` or ``second`` allows (a number, or a schedule string)."""

    first: Constraint
    second: Constraint

    @property
    def type_name(self) -> str:  # noqa: D102
        return f"{self.first.type_name} or {self.second.type_name}"

    @property
    def allowed(self) -> str:  # noqa: D102
        return f"{self.first.allowed}, or {self.second.allowed}"

    def accepts(self, value: object) -> bool:  # noqa: D102
        return self.first.accepts(value) or self.second.accepts(value)


def require(constraint: Constraint, owner: str, name: str, value: object) -> None:
    """Refuse ``value`` of parameter ``name`` of ``owner`` unless ``constraint`` accepts it.

    Raises:
        InvalidConfigError: "The '{name}' parameter of {owner} must be {allowed}. Got {value!r}."
    """
    if not constraint.accepts(value):
        raise InvalidConfigError(name, owner, constraint.allowed, value)
