"""lowcomm: communication-efficient distributed optimization with exact accounting.

Algorithms are explicit state plus step functions; engines (in-process ``simulate`` and
multi-process ``torchdist``) own the loop, the transport, the ledger and the clock. This module
is the public surface (docs/api.md); its names are imported on first use, so ``import lowcomm``
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "run": "lowcomm.api",
    "compare": "lowcomm.api",
    "Result": "lowcomm.experiments.execution",
    "Comparison": "lowcomm.experiments.compare",
    "RunConfig": "lowcomm.experiments.config",
    "register_algorithm": "lowcomm.algorithms.registry",
    "LowcommError": "lowcomm.core.errors",
    "InvalidConfigError": "lowcomm.core.errors",
    "DataError": "lowcomm.core.errors",
    "DivergenceError": "lowcomm.core.errors",
    "Interrupted": "lowcomm.experiments.interrupts",
    "RankError": "lowcomm.engines.ranks",
    "AlgorithmSettings": "lowcomm.algorithms.settings",
    "About": "lowcomm.algorithms.settings",
    "When": "lowcomm.algorithms.settings",
    "setting": "lowcomm.algorithms.settings",
    "Interval": "lowcomm.core.constraints",
    "OneOf": "lowcomm.core.constraints",
    "Flag": "lowcomm.core.constraints",
    "Text": "lowcomm.core.constraints",
    "NoneOr": "lowcomm.core.constraints",
    "ListOf": "lowcomm.core.constraints",
    "POSITIVE": "lowcomm.core.constraints",
    "NON_NEGATIVE": "lowcomm.core.constraints",
    "Algorithm": "lowcomm.algorithms.base",
    "Context": "lowcomm.algorithms.base",
    "NoState": "lowcomm.algorithms.base",
    "Upload": "lowcomm.core.messages",
    "Download": "lowcomm.core.messages",
    "Dense": "lowcomm.core.messages",
    "Sparse": "lowcomm.core.messages",
    "Scalars": "lowcomm.core.messages",
    "SignBits": "lowcomm.core.messages",
    "Bundle": "lowcomm.core.messages",
    "ScaledSigns": "lowcomm.core.messages",
    "Quantized": "lowcomm.core.messages",
    "LowRankFactors": "lowcomm.core.messages",
}
_SUBMODULES = ("ddp",)
"""Public submodules: ``lowcomm.ddp.hook`` (compressors as DDP communication hooks)."""
__all__ = [
    "NON_NEGATIVE",
    "POSITIVE",
    "About",
    "Algorithm",
    "AlgorithmSettings",
    "Bundle",
    "Comparison",
    "Context",
    "DataError",
    "Dense",
    "DivergenceError",
    "Download",
    "Flag",
    "Interrupted",
    "Interval",
    "InvalidConfigError",
    "ListOf",
    "LowRankFactors",
    "LowcommError",
    "NoState",
    "NoneOr",
    "OneOf",
    "Quantized",
    "RankError",
    "Result",
    "RunConfig",
    "Scalars",
    "ScaledSigns",
    "SignBits",
    "Sparse",
    "Text",
    "Upload",
    "When",
    "__version__",
    "compare",
    "ddp",
    "register_algorithm",
    "run",
    "setting",
]

if TYPE_CHECKING:
    from lowcomm import ddp
    from lowcomm.algorithms.base import Algorithm, Context, NoState
    from lowcomm.algorithms.registry import register_algorithm
    from lowcomm.algorithms.settings import About, AlgorithmSettings, When, setting
    from lowcomm.api import compare, run
    from lowcomm.core.constraints import (
        NON_NEGATIVE,
        POSITIVE,
        Flag,
        Interval,
        ListOf,
        NoneOr,
        OneOf,
        Text,
    )
    from lowcomm.core.errors import DataError, DivergenceError, InvalidConfigError, LowcommError
    from lowcomm.core.messages import (
        Bundle,
        Dense,
        Download,
        LowRankFactors,
        Quantized,
        Scalars,
        ScaledSigns,
        SignBits,
        Sparse,
        Upload,
    )
    from lowcomm.experiments.compare import Comparison
    from lowcomm.experiments.config import RunConfig
    from lowcomm.experiments.execution import Result


def __getattr__(name: str) -> Any:
    """The public names, imported from their modules on first use (PEP 562)."""
    if name in _SUBMODULES:
        return importlib.import_module(f"lowcomm.{name}")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lowcomm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names."""
    return sorted(__all__)
