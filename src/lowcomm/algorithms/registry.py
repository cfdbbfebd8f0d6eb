"""The algorithms lowcomm knows by name, with their validated configs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from lowcomm.algorithms.async_msgd import AsyncMSGD, AsyncMSGDConfig
from lowcomm.algorithms.base import Algorithm
from lowcomm.algorithms.gd import GD, GDConfig
from lowcomm.algorithms.giant import GIANT, GIANTConfig
from lowcomm.algorithms.hogwild_ib import HogwildIB, HogwildIBConfig
from lowcomm.algorithms.lazy_presets import LAGConfig, LASGConfig, SASGConfig, TopKEFConfig
from lowcomm.algorithms.local_newton import LocalNewton, LocalNewtonConfig
from lowcomm.algorithms.local_sgd import LocalSGD, LocalSGDConfig
from lowcomm.algorithms.ordered_sgd import OrderedSGD
from lowcomm.algorithms.sgd import SGD, SGDConfig
from lowcomm.core.errors import InvalidConfigError


def make_sgd(config: SGDConfig) -> SGD | OrderedSGD:
    """``sgd`` as configured: with an example order, the epoch-based variant."""
    return SGD(config) if config.order == "none" else OrderedSGD(config)


REGISTRY: dict[str, tuple[type, Callable[[Any], Algorithm]]] = {
    "sgd": (SGDConfig, make_sgd),
    "local-sgd": (LocalSGDConfig, LocalSGD),
    "gd": (GDConfig, GD),
    "sasg": (SASGConfig, SASGConfig.build),
    "lasg": (LASGConfig, LASGConfig.build),
    "lag": (LAGConfig, LAGConfig.build),
    "topk-ef": (TopKEFConfig, TopKEFConfig.build),
    "local-newton": (LocalNewtonConfig, LocalNewton),
    "giant": (GIANTConfig, GIANT),
    "hogwild-ib": (HogwildIBConfig, HogwildIB),
    "async-msgd": (AsyncMSGDConfig, AsyncMSGD),
}


def option_names(name: str) -> list[str]:
    """The settings algorithm ``name`` accepts."""
    return [f.name for f in dataclasses.fields(REGISTRY[name][0])]


def build_algorithm(name: str, options: Mapping[str, Any]) -> Algorithm:
    """Construct algorithm ``name`` from its settings; unknown names or settings are refused."""
    if name not in REGISTRY:
        raise InvalidConfigError("algorithm", "lowcomm", f"one of {', '.join(REGISTRY)}", name)
    config_type, factory = REGISTRY[name]
    allowed = option_names(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InvalidConfigError(
            unknown[0], name, f"a known setting (one of {', '.join(allowed)})", options[unknown[0]]
        )
    return factory(config_type(**options))
