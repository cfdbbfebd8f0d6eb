"""Declared algorithm settings: scikit-learn's parameter constraints, as dataclass metadata.

Every field of an algorithm's config is declared once with :func:`setting`: its default, the
values it allows (an :class:`Interval`, :class:`OneOf`, :class:`Flag`, :class:`Text`,
:class:`NoneOr` or :class:`ListOf`) and a one-line meaning; the config's ``ABOUT`` (an
:class:`About`) says what the algorithm is and sends. :class:`AlgorithmSettings`, the base of
every config, checks each field against its declaration at construction; the registry, the
listing and the docs tables read the same declarations::

    @dataclass(frozen=True)
    class MyConfig(AlgorithmSettings):
        ABOUT = About("my-alg", "gradient descent", up="d values", down="d values")

        lr: float = setting(0.1, POSITIVE, "step size")

Checks that involve several settings stay in the config's ``__post_init__`` (after
``super().__post_init__()``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, TypeVar

from lowcomm.core.constraints import (
    NON_NEGATIVE,
    POSITIVE,
    Constraint,
    Flag,
    Interval,
    ListOf,
    NoneOr,
    OneOf,
    Text,
    require,
)
from lowcomm.core.errors import InvalidConfigError

__all__ = [
    "NON_NEGATIVE",
    "POSITIVE",
    "About",
    "AlgorithmSettings",
    "Constraint",
    "Flag",
    "Interval",
    "ListOf",
    "NoneOr",
    "OneOf",
    "OnlyWhen",
    "Setting",
    "Text",
    "When",
    "check_declaration",
    "is_asynchronous",
    "only_when",
    "participation_refusal",
    "setting",
    "settings_of",
]

T = TypeVar("T")
_KEY = "lowcomm.setting"


class _Declared(NamedTuple):
    constraint: Constraint
    meaning: str
    part: str | None


def setting(default: T, constraint: Constraint, meaning: str, *, part: str | None = None) -> T:
    """Declare a config field: its default, allowed values and one-line meaning.

    Args:
        default: the default value (must be allowed; checked at registration).
        constraint: the allowed values.
        meaning: what the setting does, in one line.
        part: the part of the algorithm the setting configures (``line search``), which error
            messages name instead of the algorithm.
    """
    declared = _Declared(constraint, meaning, part)
    return dataclasses.field(default=default, metadata={_KEY: declared})


class Setting(NamedTuple):
    """One declared setting of a config class."""

    name: str
    default: object
    constraint: Constraint
    meaning: str
    part: str | None


@dataclass(frozen=True)
class When:
    """An algorithm that is asynchronous exactly when setting ``setting`` equals ``value``."""

    setting: str
    value: object


@dataclass(frozen=True)
class OnlyWhen:
    """Partial participation allowed only while setting ``setting`` equals ``value``.

    Otherwise it is refused for ``reason``: why the algorithm then needs every worker in
    every round.
    """

    setting: str
    value: object
    reason: str


ASYNCHRONOUS_REFUSAL = "it is asynchronous (each worker takes part whenever its upload arrives)"
UNDECLARED_REFUSAL = "its ABOUT does not declare participation=True"


@dataclass(frozen=True)
class About:
    """What an algorithm is, in one line each.

    Attributes:
        name: the algorithm's name in error messages.
        summary: what it does.
        up: what a worker sends the aggregator.
        down: what the aggregator sends a worker.
        asynchronous: True, False, or :class:`When` it depends on a setting.
        objective: what it minimises, against the reported objective F (the mean loss over
            all training examples plus the L2 term).
        participation: whether a run may sample the workers of each synchronous round
            (:mod:`lowcomm.engines.participation`): True when its maths is per round over
            whoever takes part; the reason in words when it needs every worker every round;
            :class:`OnlyWhen` it depends on a setting (a tuple: on several, all must hold);
            False (the default): not declared, refused.
    """

    name: str
    summary: str
    up: str
    down: str
    asynchronous: bool | When = False
    objective: str = "(not declared)"
    participation: bool | str | OnlyWhen | tuple[OnlyWhen, ...] = False


class AlgorithmSettings:
    """Base of algorithm configs: frozen dataclasses whose every field is a declared setting.

    Subclasses set ``ABOUT`` and declare their fields with :func:`setting`; construction checks
    every field against its declaration.
    """

    ABOUT: ClassVar[About]

    def __post_init__(self) -> None:
        """Refuse any field outside its declared values."""
        for declared in settings_of(type(self)):
            owner = declared.part or self.ABOUT.name
            require(declared.constraint, owner, declared.name, getattr(self, declared.name))


def settings_of(config_class: type) -> list[Setting]:
    """The declared settings of a config class, in field order."""
    out = []
    for field in dataclasses.fields(config_class):
        declared = field.metadata[_KEY]
        out.append(Setting(field.name, field.default, *declared))
    return out


def is_asynchronous(config: AlgorithmSettings) -> bool:
    """Whether the algorithm ``config`` configures runs asynchronously."""
    mode = config.ABOUT.asynchronous
    if isinstance(mode, When):
        return bool(getattr(config, mode.setting) == mode.value)
    return mode


def only_when(declared: object) -> tuple[OnlyWhen, ...]:
    """The :class:`OnlyWhen` conditions of an ``ABOUT.participation`` (none for the others)."""
    if isinstance(declared, OnlyWhen):
        return (declared,)
    if isinstance(declared, tuple):
        return declared
    return ()


def participation_refusal(config: AlgorithmSettings) -> str | None:
    """Why the algorithm ``config`` configures cannot sample its workers per round (None: it can).

    Asynchronous algorithms never can; the others as their ``ABOUT.participation`` declares.
    """
    if is_asynchronous(config):
        return ASYNCHRONOUS_REFUSAL
    declared = config.ABOUT.participation
    conditions = only_when(declared)
    if conditions:
        unmet = [c.reason for c in conditions if getattr(config, c.setting) != c.value]
        return "; ".join(unmet) or None
    if declared is True:
        return None
    return declared if isinstance(declared, str) and declared else UNDECLARED_REFUSAL


def check_declaration(config_class: object, owner: str) -> type[AlgorithmSettings]:
    """Return ``config_class`` if it is a declared :class:`AlgorithmSettings` dataclass.

    It must have an ``ABOUT``, every field declared with :func:`setting` with an allowed
    default, and a :class:`When` must name one of its settings; otherwise
    :class:`InvalidConfigError` says what is wrong, naming the caller ``owner``.
    """
    if not (
        isinstance(config_class, type)
        and issubclass(config_class, AlgorithmSettings)
        and dataclasses.is_dataclass(config_class)
        and isinstance(getattr(config_class, "ABOUT", None), About)
    ):
        allowed = "a dataclass subclassing lowcomm's AlgorithmSettings, with an ABOUT"
        raise InvalidConfigError("config_class", owner, allowed, config_class)
    problem = _declaration_problem(config_class)
    if problem:
        raise InvalidConfigError("config_class", owner, problem, config_class)
    return config_class


def _declaration_problem(config_class: type[AlgorithmSettings]) -> str | None:
    """What is wrong with the declarations of an ABOUT-carrying settings dataclass, if anything."""
    for field in dataclasses.fields(config_class):  # type: ignore[arg-type]
        if _KEY not in field.metadata:
            return f"a dataclass whose fields are all declared with setting() (not {field.name!r})"
    declared = settings_of(config_class)
    for s in declared:
        if not s.constraint.accepts(s.default):
            return f"declared with defaults they allow ({s.name!r} must be {s.constraint.allowed})"
    names = {s.name for s in declared}
    about = config_class.ABOUT
    for switch in (about.asynchronous, *only_when(about.participation)):
        if isinstance(switch, When | OnlyWhen) and switch.setting not in names:
            kind = type(switch).__name__
            return f"an ABOUT whose {kind} names one of its settings (not {switch.setting!r})"
    return None
