"""The algorithms lowcomm knows by name: built in, registered, or from installed packages.

A separately installed package adds an algorithm through the entry-point group
``lowcomm.algorithms``: each entry point's name is the algorithm's name and it loads to a config
class (a declared :class:`~lowcomm.algorithms.settings.AlgorithmSettings` dataclass with a
``build()`` method). The group is read once, the first time the registry is read::

    [project.entry-points."lowcomm.algorithms"]
    my-alg = "my_package:MyConfig"
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, NamedTuple

from lowcomm.algorithms.async_msgd import AsyncMSGD, AsyncMSGDConfig
from lowcomm.algorithms.base import Algorithm
from lowcomm.algorithms.gd import GD, GDConfig
from lowcomm.algorithms.giant import GIANT, GIANTConfig
from lowcomm.algorithms.hogwild_ib import HogwildIB, HogwildIBConfig
from lowcomm.algorithms.lazy_presets import LAGConfig, LASGConfig, SASGConfig, TopKEFConfig
from lowcomm.algorithms.local_newton import LocalNewton, LocalNewtonConfig
from lowcomm.algorithms.local_sgd import LocalSGD, LocalSGDConfig
from lowcomm.algorithms.ordered_sgd import OrderedSGD
from lowcomm.algorithms.settings import AlgorithmSettings, check_declaration, settings_of
from lowcomm.algorithms.sgd import SGD, SGDConfig
from lowcomm.core.errors import InvalidConfigError, LowcommError

GROUP = "lowcomm.algorithms"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

Factory = Callable[[Any], Algorithm]


class Registered(NamedTuple):
    """A registered algorithm: its config class and what builds the algorithm from a config."""

    config: type[AlgorithmSettings]
    factory: Factory


class EntryPointError(LowcommError):
    """An installed package's ``lowcomm.algorithms`` entry point cannot be used."""

    def __init__(self, entry_point: EntryPoint, problem: str) -> None:
        dist = entry_point.dist
        source = f" (from the installed package {dist.name} {dist.version})" if dist else ""
        super().__init__(
            f"The algorithm entry point '{entry_point.name} = {entry_point.value}' of group "
            f"{entry_point.group}{source} cannot be used: {problem}"
        )


class Registry(Mapping[str, Registered]):
    """Algorithm name -> :class:`Registered`, reading the entry-point ``group`` on first use.

    Args:
        built_in: name -> (config class, factory or None for ``config_class.build``).
        group: the entry-point group to read (None: none).
    """

    def __init__(
        self,
        built_in: Mapping[str, tuple[type[AlgorithmSettings], Factory | None]],
        group: str | None = GROUP,
    ) -> None:
        self._entries: dict[str, Registered] = {}
        for name, (config_class, factory) in built_in.items():
            self._add(name, config_class, factory, replace=False)
        self._group = group

    def __getitem__(self, name: str) -> Registered:
        self._discover()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        self._discover()
        return iter(self._entries)

    def __len__(self) -> int:
        self._discover()
        return len(self._entries)

    def register(
        self,
        name: str,
        config_class: type[AlgorithmSettings],
        factory: Factory | None = None,
        *,
        replace: bool = False,
    ) -> None:
        """Add algorithm ``name``; see :func:`register_algorithm`."""
        self._discover()
        self._add(name, config_class, factory, replace)

    def _add(self, name: str, config_class: object, factory: Factory | None, replace: bool) -> None:
        owner = f"register_algorithm({name!r})"
        if not (isinstance(name, str) and _NAME.fullmatch(name)):
            allowed = "a name of letters, digits, '.', '_' and '-'"
            raise InvalidConfigError("name", "register_algorithm", allowed, name)
        if name in self._entries and not replace:
            allowed = "a name not registered yet (or pass replace=True)"
            raise InvalidConfigError("name", "register_algorithm", allowed, name)
        declared = check_declaration(config_class, owner)
        factory = factory or getattr(declared, "build", None)
        if not callable(factory):
            allowed = "a config class with a build() method, or a factory"
            raise InvalidConfigError("factory", owner, allowed, factory)
        self._entries[name] = Registered(declared, factory)

    def _discover(self) -> None:
        """Add the entry points of the group, once; a broken one is raised again on every read."""
        if self._group is None:
            return
        group, self._group = self._group, None  # a plugin read while loading does not recurse
        before = dict(self._entries)
        try:
            for entry_point in entry_points(group=group):
                self._add_entry_point(entry_point)
        except EntryPointError:
            self._entries, self._group = before, group
            raise

    def _add_entry_point(self, entry_point: EntryPoint) -> None:
        try:
            config_class = entry_point.load()
        except Exception as exc:  # whatever importing a third-party module raises
            raise EntryPointError(entry_point, f"{type(exc).__name__}: {exc}") from None
        try:
            self._add(entry_point.name, config_class, None, replace=False)
        except InvalidConfigError as exc:
            raise EntryPointError(entry_point, str(exc)) from None


def make_sgd(config: SGDConfig) -> SGD | OrderedSGD:
    """``sgd`` as configured: with an example order, the epoch-based variant."""
    return SGD(config) if config.order == "none" else OrderedSGD(config)


BUILT_IN: dict[str, tuple[type[AlgorithmSettings], Factory | None]] = {
    "sgd": (SGDConfig, make_sgd),
    "local-sgd": (LocalSGDConfig, LocalSGD),
    "gd": (GDConfig, GD),
    "sasg": (SASGConfig, None),
    "lasg": (LASGConfig, None),
    "lag": (LAGConfig, None),
    "topk-ef": (TopKEFConfig, None),
    "local-newton": (LocalNewtonConfig, LocalNewton),
    "giant": (GIANTConfig, GIANT),
    "hogwild-ib": (HogwildIBConfig, HogwildIB),
    "async-msgd": (AsyncMSGDConfig, AsyncMSGD),
}
REGISTRY = Registry(BUILT_IN)


def register_algorithm(
    name: str,
    config_class: type[AlgorithmSettings],
    factory: Factory | None = None,
    *,
    replace: bool = False,
) -> None:
    """Make algorithm ``name`` known to :func:`build_algorithm`, ``lowcomm run`` and the listing.

    Args:
        name: the algorithm's name (letters, digits, ``.``, ``_``, ``-``).
        config_class: a frozen dataclass subclassing
            :class:`~lowcomm.algorithms.settings.AlgorithmSettings`, with an ``ABOUT`` and every
            field declared with :func:`~lowcomm.algorithms.settings.setting`.
        factory: builds the algorithm from a config; by default ``config_class.build``.
        replace: allow replacing an algorithm of the same name.

    Raises:
        InvalidConfigError: the name is taken (without ``replace``) or malformed, or the config
            class is not declared as above.
    """
    REGISTRY.register(name, config_class, factory, replace=replace)


def registered(name: str) -> Registered:
    """Algorithm ``name``'s registration; an unknown name is refused, listing the known ones."""
    if name not in REGISTRY:
        raise InvalidConfigError("algorithm", "lowcomm", f"one of {', '.join(REGISTRY)}", name)
    return REGISTRY[name]


def option_names(name: str) -> list[str]:
    """The settings algorithm ``name`` accepts."""
    return [declared.name for declared in settings_of(registered(name).config)]


def build_algorithm(name: str, options: Mapping[str, Any]) -> Algorithm:
    """Construct algorithm ``name`` from its settings; unknown names or settings are refused."""
    config_type, factory = registered(name)
    allowed = option_names(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidConfigError(
            unknown[0], name, f"a known setting (one of {', '.join(allowed)})", options[unknown[0]]
        )
    return factory(config_type(**options))
