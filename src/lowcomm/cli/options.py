"""The option and argument types the commands share, and their defaults.

A setting flag defaults to None, so a flag not given leaves the config file's value or the
config's default in place; its help ends with that default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lowcomm.experiments.config import RunConfig


def _default(field: str) -> Any:
    """The default of a run config field."""
    return RunConfig.model_fields[field].default


def _opt(help_text: str, field: str | None = None) -> Any:
    """A flag whose absence (None) leaves the config file's value or the default in place.

    With ``field``, the help ends with that config field's default.
    """
    if field is not None:
        default = _default(field)
        help_text += f" [default: {'none' if default is None else default}]"
    return typer.Option(help=help_text, show_default=False)


ConfigFile = Annotated[
    Path | None,
    typer.Argument(
        help="A TOML or YAML file of settings; flags override it.",
        metavar="CONFIG_FILE",
        show_default=False,
    ),
]
Data = Annotated[str | None, _opt("Data set, e.g. digits or libsvm:a9a,a9a.t.", "data")]
Workers = Annotated[int | None, _opt("Number of workers.", "workers")]
Partition = Annotated[
    str | None,
    _opt(
        "iid, sorted, classes:K, dirichlet:ALPHA[,min_size=M], size-skew:POWER or contiguous.",
        "partition",
    ),
]
Rounds = Annotated[int | None, _opt("Rounds to run (aggregator updates if async).", "rounds")]
Epochs = Annotated[
    int | None, _opt("Run this many epochs instead of --rounds (sgd with --order).", "epochs")
]
GradBudget = Annotated[
    int | None, _opt("Stop after K gradient evaluations (K in the papers).", "grad_budget")
]
SampleSizesOpt = Annotated[
    str | None,
    _opt("hogwild-ib sample sizes: const:S, linear:A,B or poly:P.", "sample_sizes"),
]
Order = Annotated[
    str | None,
    _opt("sgd example order: d-rr, so, id-grab, id-grab-mean, cd-grab, cd-grab-signs.", "order"),
]
Model = Annotated[
    str | None,
    _opt("auto, logistic, softmax, mlp, lenet, lstm-lm, pca or package.module:factory.", "model"),
]
Loss = Annotated[
    str | None,
    _opt("For module models: cross-entropy, mse or package.module:function.", "loss"),
]
L2 = Annotated[float | None, _opt("L2 regularisation weight.", "l2")]
EvalEvery = Annotated[int | None, _opt("Record a history row every N rounds.", "eval_every")]
Dtype = Annotated[str | None, _opt("float32 or float64.", "dtype")]
Device = Annotated[
    str | None, _opt("Compute on cpu, cuda or auto (cuda when PyTorch sees a GPU).", "device")
]
Latency = Annotated[float | None, _opt("Seconds per message (simulated).", "latency")]
Bandwidth = Annotated[float | None, _opt("Bytes per second per link (simulated).", "bandwidth")]
SecondsPerGrad = Annotated[
    float | None, _opt("Seconds per gradient evaluation (simulated).", "seconds_per_grad")
]
RoundLatency = Annotated[
    float | None, _opt("Seconds added to every sync round (simulated).", "round_latency")
]
LagCap = Annotated[int | None, _opt("Async: max rounds a worker runs ahead.", "lag_cap")]
AsyncOrder = Annotated[
    str | None,
    _opt(
        "Async: which uploads an update handles: clock (simulated arrival; both engines) or "
        "arrival (real arrival; torchdist on gloo).",
        "async_order",
    ),
]
Timeout = Annotated[
    float | None,
    _opt("torchdist: seconds a rank waits for another before it reports it stalled.", "timeout"),
]
Participation = Annotated[
    float | None,
    _opt("Fraction P in (0, 1] of the workers sampled each round (seeded).", "participation"),
]
PerRound = Annotated[
    int | None, _opt("Or K workers sampled each round (seeded; 1 <= K <= workers).", "per_round")
]
Out = Annotated[Path, typer.Option(help="Output folder.", metavar="DIR", show_default=False)]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress, no summary.")]
TensorBoard = Annotated[
    Path | None,
    typer.Option(
        help="Write TensorBoard scalars per evaluation here (needs lowcomm[tensorboard]).",
        metavar="DIR",
        show_default=False,
    ),
]
ProgressEvery = Annotated[
    float,
    typer.Option(help="Seconds between progress lines when stderr is not a terminal.", metavar="S"),
]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite", help="Replace what OUT holds (its old files are removed before the start)."
    ),
]


def _run_progress(quiet: bool) -> bool:
    """Report progress unless quiet: a bar on a terminal, else a line every few seconds."""
    return not quiet
