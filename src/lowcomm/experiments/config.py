"""The run configuration: one validated object built from a TOML/YAML file and/or flags."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails

from lowcomm.core.device import Device
from lowcomm.core.errors import DataError, InvalidConfigError
from lowcomm.core.text import utf8_text

MODELS = ("auto", "logistic", "softmax", "mlp", "lenet", "lstm-lm", "pca")
LOSSES = ("cross-entropy", "mse")
IN_MEMORY = "in-memory"
"""The ``model``/``loss``/``data`` value that stands for an object given to :func:`lowcomm.run`."""
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _YamlLoader(yaml.SafeLoader):
    """YAML with YAML 1.2 floats: ``1e-3`` is a number (PyYAML's 1.1 rules need ``1.0e-3``)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`_YamlLoader`."""
    return yaml.load(text, Loader=_YamlLoader)


class RunConfig(BaseModel):
    """Everything that defines a run; see ``docs/cli.md`` for each field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: str = "sgd"
    options: dict[str, Any] = Field(default_factory=dict)
    data: str = "digits"
    model: str = "auto"
    loss: str = "cross-entropy"
    hidden: tuple[int, ...] = (64,)
    l2: float = Field(default=1e-4, ge=0)
    intercept: bool = False  # logistic and softmax: fit a bias term (networks have their own)
    workers: int = Field(default=8, ge=1)
    participation: float | None = None  # the fraction P of the workers in each round
    per_round: int | None = Field(default=None, ge=1)  # or K workers in each round
    partition: str = "iid"
    rounds: int = Field(default=100, ge=1)
    epochs: int | None = Field(default=None, ge=1)
    grad_budget: int | None = Field(default=None, ge=1)
    order: str | None = None
    sample_sizes: str | None = None
    seed: int = Field(default=0, ge=0)
    engine: Literal["simulate", "torchdist"] = "simulate"
    eval_every: int = Field(default=1, ge=1)
    checkpoint_every: int = Field(default=0, ge=0)
    dtype: Literal["float32", "float64"] = "float32"
    device: Device = "cpu"
    latency: float = Field(default=0.0, ge=0)
    bandwidth: float = Field(default=math.inf, gt=0)
    seconds_per_grad: float = Field(default=0.0, ge=0)
    round_latency: float = Field(default=0.0, ge=0)
    speeds: tuple[float, ...] = ()
    lag_cap: int | None = Field(default=None, ge=0)
    async_order: Literal["clock", "arrival"] = "clock"
    timeout: float = Field(default=300.0, gt=0, le=1e6)  # torchdist: seconds a rank waits
    test_fraction: float = Field(default=0.25, gt=0, lt=1)

    @field_validator("model")
    @classmethod
    def _known_model(cls, model: str) -> str:
        if model not in (*MODELS, IN_MEMORY) and not _IMPORT_PATH.match(model):
            raise ValueError(f"one of {', '.join(MODELS)} or package.module:factory")
        return model

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, loss: str) -> str:
        if loss not in (*LOSSES, IN_MEMORY) and not _IMPORT_PATH.match(loss):
            raise ValueError(f"one of {', '.join(LOSSES)} or package.module:function")
        return loss

    @field_validator("participation")
    @classmethod
    def _fraction(cls, participation: float | None) -> float | None:
        if participation is not None and not 0 < participation <= 1:
            raise ValueError("a fraction in (0, 1]")
        return participation

    @field_validator("speeds")
    @classmethod
    def _speeds_positive(cls, speeds: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < s < math.inf for s in speeds):
            raise ValueError("finite numbers > 0")
        return speeds

    @field_validator("l2", "latency", "seconds_per_grad", "round_latency")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("a finite number")
        return value

    @field_validator("hidden")
    @classmethod
    def _widths(cls, hidden: tuple[int, ...]) -> tuple[int, ...]:
        if any(width < 1 for width in hidden):
            raise ValueError("layer widths >= 1")
        return hidden

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse true/false for a number (pydantic would read them as 1 and 0)."""
        values = value if isinstance(value, list | tuple) else [value]
        numeric = _numeric(cls.model_fields[str(info.field_name)].annotation)
        if numeric and any(isinstance(v, bool) for v in values):
            raise ValueError("a number, not true or false")
        return value


def _numeric(annotation: Any) -> bool:
    """Whether a field holds numbers: int or float, alone, optional or in a tuple."""
    return annotation in (int, float) or any(_numeric(a) for a in get_args(annotation))


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a table of settings",
}
"""What a field of a pydantic error type must be, in the words of an ``InvalidConfigError``."""


def _describe(error: ErrorDetails) -> str:
    """The allowed values of a failed field, in words."""
    if error["type"] in _EXPECTED:
        return _EXPECTED[error["type"]]
    ctx: dict[str, Any] = error.get("ctx", {})
    bounds = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    for key, sign in bounds.items():
        if key in ctx:
            return f"a number {sign} {ctx[key]}"
    if "expected" in ctx:
        return f"one of {ctx['expected']}"
    if error["type"] == "extra_forbidden":
        return f"a known setting (one of {', '.join(RunConfig.model_fields)})"
    return str(error["msg"]).removeprefix("Value error, ").removeprefix("Input should be ")


def make_config(values: dict[str, Any]) -> RunConfig:
    """Validate ``values``; the first problem becomes one :class:`InvalidConfigError`."""
    try:
        return RunConfig(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"])
        raise InvalidConfigError(name, "the run config", _describe(error), error["input"]) from None


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML or YAML file (by extension)."""
    if not path.is_file():
        raise DataError(path, "config file not found")
    text = utf8_text(path, path.read_bytes())
    try:
        loaded = tomllib.loads(text) if path.suffix == ".toml" else load_yaml(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise DataError(path, f"not valid {path.suffix.lstrip('.').upper()}: {exc}") from None
    if not isinstance(loaded, dict):
        raise DataError(path, "expected a table of settings at the top level")
    return loaded


RESUME_MAY_CHANGE = (
    "rounds",
    "epochs",
    "grad_budget",
    "eval_every",
    "checkpoint_every",
    "engine",
    "timeout",
)
"""The settings a resumed run may change: how long, how often it records, where it runs and
how long a torchdist rank waits for another."""


def trajectory_settings(config: RunConfig) -> dict[str, Any]:
    """The settings that define a run's trajectory (all but :data:`RESUME_MAY_CHANGE`).

    Plain data (JSON types), so a checkpoint carries them and is still read as data.
    """
    dumped = config.model_dump(mode="json")
    return {key: value for key, value in dumped.items() if key not in RESUME_MAY_CHANGE}
