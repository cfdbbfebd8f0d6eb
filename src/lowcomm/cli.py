"""``lowcomm``: ``run``, ``compare``, ``plot``, ``partition``, ``reproduce`` (``docs/cli.md``).

Each command imports what it runs (pandas, matplotlib, scikit-learn, the engines) when it runs,
so ``lowcomm --help``, ``lowcomm run --help`` and ``lowcomm algorithms`` start about as fast as
``import torch``.

Exit codes: 0 success; 2 invalid usage, settings or data, reported as one ``error:`` line on
stderr before any work starts; 3 the training diverged (the outputs are saved anyway); 130 or
143 SIGINT or SIGTERM stopped a run after a round (one line says where; the rows so far are
saved); 4 a torchdist rank stalled or failed (one line names it and the round; rank 0 saves the
rows so far).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import lowcomm
from lowcomm.algorithms.describe import (
    OBJECTIVE_KEY,
    describe_algorithm,
    describe_algorithms,
    describe_participation,
    describe_settings,
)
from lowcomm.core.errors import InvalidConfigError, LowcommError
from lowcomm.experiments import reproduce as reproductions
from lowcomm.experiments.config import RunConfig, load_yaml, make_config, read_config_file
from lowcomm.experiments.interrupts import Interrupted

if TYPE_CHECKING:
    import pandas as pd

    from lowcomm.experiments.execution import Result

USAGE, DIVERGED, RANK_FAILED = 2, 3, 4
COMPARE = "lowcomm compare"
COMPARE_KEYS = ("algorithms", "seeds", "target_loss", "options", "grid")  # compare's file only
MB = 1e6

app = typer.Typer(
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Communication-efficient distributed optimisation: run, compare, plot and reproduce.",
)


def _version(value: bool) -> None:
    """Print the version and stop (the eager ``--version`` flag)."""
    if value:
        typer.echo(f"lowcomm {lowcomm.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Communication-efficient distributed optimisation: run, compare, plot and reproduce."""


def _opt(help_text: str, field: str | None = None) -> Any:
    """A flag whose absence (None) leaves the config file's value or the default in place.

    With ``field``, the help ends with that config field's default.
    """
    if field is not None:
        default = RunConfig.model_fields[field].default
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


def _echo_error(message: str) -> None:
    """Print ``error: <message>`` as one line on stderr."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)


def _fail(message: str, code: int) -> NoReturn:
    """Print ``error: <message>`` as one line on stderr and exit with ``code``."""
    _echo_error(message)
    raise typer.Exit(code)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn a :class:`LowcommError` into one ``error:`` line and exit code 2.

    An interrupted run is one ``error:`` line too, with exit code 128 + the signal; a torchdist
    rank that stalled or failed, with exit code 4.
    """
    try:
        yield
    except LowcommError as exc:
        from lowcomm.engines.ranks import RankError, ignore_sigterm  # loaded if one was raised

        if isinstance(exc, RankError):
            ignore_sigterm()  # torchrun's SIGTERM must not cut this line short
            _fail(str(exc), RANK_FAILED)
        _fail(str(exc), USAGE)
    except Interrupted as exc:
        _fail(str(exc), exc.exit_code)


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


def _console() -> Console:
    """Standard output; wide when it is not a terminal, so tables are never cut."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def _run_progress(quiet: bool) -> bool:
    """Report progress unless quiet: a bar on a terminal, else a line every few seconds."""
    return not quiet


# --- run ---------------------------------------------------------------------------------------


def _run_table(result: Result) -> Table:
    """The final state of a run as a two-column table."""
    s, metric = result.summary, result.metadata["problem"]["metric"]
    table = Table(title="Run summary", show_header=False)
    rows = [
        ("Rounds", f"{s['rounds']}"),
        ("Uploads", f"{s['uploads']:,}"),
        ("MB up / down", f"{_number(s['bytes_up'] / MB)} / {_number(s['bytes_down'] / MB)}"),
        ("Gradient evaluations", f"{s['grad_evals']:,}"),
        ("Simulated time (s)", f"{s['sim_time']:.4g}"),
        ("Final train loss", f"{s['train_loss']:.6g}"),
        (f"Test metric ({metric})", f"{s['test_metric']:.4f}"),
    ]
    for row in rows:
        table.add_row(*row)
    return table


@app.command()
def run(
    ctx: typer.Context,
    out: Out,
    config_file: ConfigFile = None,
    algorithm: Annotated[str | None, _opt("Algorithm (docs/algorithms.md).", "algorithm")] = None,
    data: Data = None,
    workers: Workers = None,
    participation: Participation = None,
    per_round: PerRound = None,
    partition: Partition = None,
    rounds: Rounds = None,
    epochs: Epochs = None,
    grad_budget: GradBudget = None,
    order: Order = None,
    sample_sizes: SampleSizesOpt = None,
    seed: Annotated[int | None, _opt("Seed of data split, partition and sampling.", "seed")] = None,
    engine: Annotated[str | None, _opt("simulate or torchdist (under torchrun).", "engine")] = None,
    model: Model = None,
    loss: Loss = None,
    l2: L2 = None,
    eval_every: EvalEvery = None,
    dtype: Dtype = None,
    device: Device = None,
    latency: Latency = None,
    bandwidth: Bandwidth = None,
    seconds_per_grad: SecondsPerGrad = None,
    round_latency: RoundLatency = None,
    lag_cap: LagCap = None,
    async_order: AsyncOrder = None,
    timeout: Timeout = None,
    checkpoint_every: Annotated[
        int | None, _opt("Save OUT/checkpoint.pt every N rounds (0: never).", "checkpoint_every")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")
    ] = False,
    replay: Annotated[
        Path | None,
        typer.Option(
            help="Async: handle the updates in the order of the run saved in DIR "
            "(its ledger.csv), e.g. a torchdist --async-order arrival run.",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Algorithm setting KEY=VALUE (repeatable).",
            metavar="KEY=VALUE",
            show_default=False,
        ),
    ] = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    tensorboard: TensorBoard = None,
    progress_every: ProgressEvery = 10.0,
) -> None:
    """Run one algorithm and save its history and metadata in OUT.

    Settings, lowest precedence first: defaults, OUT/run.json (with --resume), CONFIG_FILE,
    flags.
    """
    from lowcomm import api
    from lowcomm.experiments import execution

    # The setting flags reach the config through ctx.params (see _flags).
    with _user_errors():
        execution.check_out(out)
        previous = execution.previous_config(out) if resume else {}
        sets_ = {"options": parse_sets(sets or [], "lowcomm run")}
        config = make_config(_merge(previous, _file(config_file), _flags(ctx), sets_))
        result = api.run(
            config=config,
            out=out,
            resume=resume,
            replay=replay,
            progress=_run_progress(quiet),
            overwrite=overwrite,
            tensorboard=tensorboard,
            progress_every=progress_every,
        )
    if result is None:
        return
    if not quiet:
        console = _console()
        console.print(_run_table(result))
        console.print(f"Saved to {out}")
    if result.divergence is not None:
        _fail(str(result.divergence), DIVERGED)


# --- compare -----------------------------------------------------------------------------------


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


def _number(value: float, digits: int = 4) -> str:
    """A table cell: ``-`` for NaN, otherwise ``value`` to ``digits`` significant digits."""
    return "-" if math.isnan(value) else f"{value:,.{digits}g}"


def _compare_table(table: pd.DataFrame, rule: str, metric: str) -> Table:
    """The comparison summary as a rich table."""
    target = float(table["target_loss"].iloc[0])
    shown = Table(title=f"Cost to reach train loss {target:.6g} ({rule}), mean over seeds")
    headers = (
        "algorithm",
        "seeds",
        "rounds",
        "uploads",
        "MB",
        "grad evals",
        "sim time (s)",
        "final loss",
        f"test {metric}",
        "diverged",
    )
    for header in headers:
        shown.add_column(header, justify="left" if header == "algorithm" else "right")
    for row in table.itertuples():
        shown.add_row(
            escape(str(row.algorithm)),
            str(row.seeds),
            _number(row.rounds_to_target, 6),
            _number(row.uploads_to_target, 6),
            _number(row.bytes_to_target / MB),
            _number(row.grad_evals_to_target, 6),
            _number(row.sim_time_to_target),
            _number(row.final_train_loss),
            _number(row.final_test_metric),
            str(row.diverged),
        )
    return shown


@app.command()
def compare(
    ctx: typer.Context,
    out: Out,
    config_file: ConfigFile = None,
    algorithms: Annotated[
        str | None,
        _opt(
            "Comma-separated algorithms or variants NAME[KEY=VALUE,...], e.g. "
            "'sgd[lr=0.1],sgd[lr=0.01],sasg'. [default: sgd,local-sgd]"
        ),
    ] = None,
    seeds: Annotated[str | None, _opt("Comma-separated seeds. [default: 0]")] = None,
    target_loss: Annotated[
        float | None, _opt("Target train loss. [default: the largest final mean loss]")
    ] = None,
    data: Data = None,
    workers: Workers = None,
    participation: Participation = None,
    per_round: PerRound = None,
    partition: Partition = None,
    rounds: Rounds = None,
    epochs: Epochs = None,
    grad_budget: GradBudget = None,
    order: Order = None,
    sample_sizes: SampleSizesOpt = None,
    model: Model = None,
    loss: Loss = None,
    l2: L2 = None,
    eval_every: EvalEvery = None,
    dtype: Dtype = None,
    device: Device = None,
    latency: Latency = None,
    bandwidth: Bandwidth = None,
    seconds_per_grad: SecondsPerGrad = None,
    round_latency: RoundLatency = None,
    lag_cap: LagCap = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE for all that accept it, ALG.KEY=VALUE for one (repeatable).",
            metavar="[ALG.]KEY=VALUE",
            show_default=False,
        ),
    ] = None,
    grids: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            help="Run every algorithm that takes KEY once per value, labelled ALG[KEY=V] "
            "(repeatable: the product).",
            metavar="KEY=V1,V2,...",
            show_default=False,
        ),
    ] = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    tensorboard: Annotated[
        Path | None,
        typer.Option(
            help="Write TensorBoard scalars per evaluation, one subfolder of DIR per run, named as "
            "its run folder (needs lowcomm[tensorboard]).",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    progress_every: ProgressEvery = 10.0,
) -> None:
    """Run several algorithms on the same data, partition and seeds; plot and summarise.

    The config file may also hold algorithms, seeds, target_loss and grid, and per-algorithm
    tables in options.
    """
    from lowcomm import api
    from lowcomm.experiments import variants

    # The setting flags reach the config through ctx.params (see _flags).
    with _user_errors():
        values = _file(config_file)
        from_file = {key: values.pop(key) for key in COMPARE_KEYS if key in values}
        names = variants.split_list(algorithms or from_file.get("algorithms", "sgd,local-sgd"))
        seed_list = _seeds(seeds or from_file.get("seeds", "0"))
        target = from_file.get("target_loss") if target_loss is None else target_loss
        in_file = variants.concerning(variants.flatten_options(_options(from_file)), names)
        settings = in_file | parse_sets(sets or [], COMPARE)
        result = api.compare(
            names,
            seeds=seed_list,
            target_loss=target,
            settings=settings,
            grid=variants.merge_grid(from_file.get("grid", {}), grids or []),
            out=out,
            progress=_run_progress(quiet),
            config=values | _flags(ctx),
            overwrite=overwrite,
            tensorboard=tensorboard,
            progress_every=progress_every,
        )
    table = result.summary
    if not quiet:
        rule = "automatic" if target is None else "given"
        metric = next(iter(result.runs.values()))[0].metadata["problem"]["metric"]
        console = _console()
        console.print(_compare_table(table, rule, metric))
        console.print(f"Saved to {out}")
    failed = table.loc[table["diverged"] > 0]
    if not failed.empty:
        which = [f"{r.algorithm} ({r.diverged} of {r.seeds} seeds)" for r in failed.itertuples()]
        message = f"training diverged: {', '.join(which)}; see each run's run.json in {out}"
        _fail(message, DIVERGED)


# --- plot --------------------------------------------------------------------------------------


def _plot_path(folders: list[Path]) -> Path:
    """Where ``plot`` writes without ``--out``."""
    from lowcomm.experiments import compare as comparison

    if len(folders) > 1:
        return Path("plots.png")
    return folders[0] / (comparison.FIGURE if comparison.is_comparison(folders[0]) else "plots.png")


@app.command()
def plot(
    folders: Annotated[
        list[Path],
        typer.Argument(
            help="Run folders and/or comparison folders.", metavar="DIR", show_default=False
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="The four-panel PNG; one PNG per x-axis goes next to it as <stem>-<x>.png. "
            "[default: DIR/compare.png for a comparison folder, DIR/plots.png for a run folder, "
            "./plots.png for several folders]",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    y: Annotated[str, typer.Option(help="History column on the y-axis.")] = "train_loss",
) -> None:
    """Redraw plots from saved histories (runs of one folder name are seeds of one curve)."""
    from lowcomm.experiments import compare as comparison

    with _user_errors():
        written = comparison.plot_folders(folders, out or _plot_path(folders), y)
    typer.echo("\n".join(str(path) for path in written))


# --- reproduce ---------------------------------------------------------------------------------


@app.command()
def reproduce(
    name: Annotated[
        str,
        typer.Argument(
            help=f"The reproduction: {', '.join(reproductions.REPRODUCTIONS)}, or all.",
            metavar="NAME",
            show_default=False,
        ),
    ],
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="The small study (under 2 minutes), on the embedded default data."
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output folder. [default: results/reproduce-NAME]",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            help="Data set. [default: the reproduction's, see docs/cli.md]",
            metavar="SPEC",
            show_default=False,
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(help="Comma-separated seeds. [default: the reproduction's]", metavar="0,1,.."),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Read back the runs already saved in OUT with the same config instead of "
            "running them again, so an interrupted study goes on.",
        ),
    ] = False,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            help="Independent runs at once, each in its own process with one torch thread; "
            "results do not depend on it. [default: the number of cores]",
            metavar="N",
            show_default=False,
        ),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Reproduce a paper's claims: run its study, write OUT/report.md and report.html."""
    from lowcomm.experiments.reproduce.report import console_table

    with _user_errors():
        request = reproductions.make_request(
            name, quick, out, data, seeds, _run_progress(quiet), resume, jobs
        )
        if name == reproductions.ALL:
            outcomes = reproductions.reproduce_all(request)
        else:
            outcomes = {name: reproductions.reproduce(name, request)}
    if not quiet:
        console = _console()
        for done, outcome in outcomes.items():
            title = f"Claims of {done}: measured here, beside the paper's run"
            console.print(console_table(outcome.claims, title, outcome.paper_source))
            if outcome.sensitivity:
                title = f"Sensitivity results of {done} (outside the paper's setting)"
                console.print(console_table(outcome.sensitivity, title, outcome.paper_source))
            console.print(f"Report: {outcome.report} ({outcome.wall_time:.0f} s)")
        if name == reproductions.ALL:
            console.print(f"Index: {request.out / reproductions.INDEX_MD}")


# --- partition ---------------------------------------------------------------------------------


def _default(field: str) -> Any:
    """The default of a run config field."""
    return RunConfig.model_fields[field].default


@app.command("partition")
def partition_command(
    data: Annotated[
        str,
        typer.Argument(
            help="Data set, as for run --data (e.g. digits).", metavar="DATA", show_default=False
        ),
    ],
    workers: Annotated[int, typer.Option(help="Number of workers.")] = _default("workers"),
    partition: Annotated[
        str,
        typer.Option(
            help="iid, sorted, classes:K, dirichlet:ALPHA[,min_size=M], size-skew:POWER or "
            "contiguous.",
            metavar="SPEC",
        ),
    ] = _default("partition"),
    seed: Annotated[int, typer.Option(help="Seed of the data split and the partition.")] = 0,
    test_fraction: Annotated[
        float, typer.Option(help="Share held out where the data set has no test split.")
    ] = _default("test_fraction"),
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Also save a PNG: each worker's label mix beside the shard sizes.",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show how a partition splits a data set's training examples among workers.

    The split is the one 'lowcomm run' trains on with the same settings: a table of each
    worker's examples per label and, with --plot, a figure.
    """
    from lowcomm.experiments.partition_view import partition_table, partition_view, plot_partition

    with _user_errors():
        view = partition_view(data, workers, partition, seed, test_fraction)
    _console().print(partition_table(view))
    if plot is not None:
        plot_partition(view, plot)
        typer.echo(str(plot))


# --- algorithms --------------------------------------------------------------------------------


def _table(title: str, headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    """Rows of text as a rich table."""
    table = Table(title=title)
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*row)
    return table


@app.command()
def algorithms(
    name: Annotated[
        str | None,
        typer.Argument(
            help="An algorithm: list its settings.", metavar="[NAME]", show_default=False
        ),
    ] = None,
) -> None:
    """List the algorithms and what each minimises, or every setting of one and its objective."""
    with _user_errors():
        if name is None:
            headers: tuple[str, ...] = (
                "algorithm",
                "what",
                "timing",
                "sends up",
                "sends down",
                "minimises",
            )
            table = _table("Algorithms", headers, [tuple(r) for r in describe_algorithms()])
            table.caption = OBJECTIVE_KEY
        else:
            headers = ("setting", "type", "default", "allowed", "meaning")
            rows = [tuple(r) for r in describe_settings(name)]
            table = _table(f"Settings of {name} (--set KEY=VALUE)", headers, rows)
            objective = describe_algorithm(name).objective
            part_time = f"partial participation: {describe_participation(name)}"
            table.caption = f"{name} minimises {objective}\n({OBJECTIVE_KEY})\n{part_time}"
    _console().print(table)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; usage errors are one ``error:`` line too (exit code 2)."""
    args = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args or ["--help"], prog_name="lowcomm", standalone_mode=False)
    except typer.Abort:
        _echo_error("aborted")
        code = 1
    except typer.TyperException as exc:
        context = getattr(exc, "ctx", None)
        message = exc.format_message()
        if context is not None:
            message = f"{message.rstrip('.')}; see '{context.command_path} --help'"
        _echo_error(message)
        code = exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)
