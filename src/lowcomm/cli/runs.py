"""``lowcomm run``, ``compare`` and ``plot``: train, compare and redraw saved runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lowcomm.cli.app import app
from lowcomm.cli.errors import DIVERGED, _fail, _user_errors
from lowcomm.cli.options import (
    L2,
    AsyncOrder,
    Bandwidth,
    ConfigFile,
    Data,
    Device,
    Dtype,
    Epochs,
    EvalEvery,
    GradBudget,
    LagCap,
    Latency,
    Loss,
    Model,
    Order,
    Out,
    Overwrite,
    Participation,
    Partition,
    PerRound,
    ProgressEvery,
    Quiet,
    RoundLatency,
    Rounds,
    SampleSizesOpt,
    SecondsPerGrad,
    TensorBoard,
    Timeout,
    Workers,
    _opt,
    _run_progress,
)
from lowcomm.cli.settings import (
    COMPARE,
    COMPARE_KEYS,
    _file,
    _flags,
    _merge,
    _options,
    _seeds,
    parse_sets,
)
from lowcomm.cli.tables import _compare_table, _console, _run_table
from lowcomm.experiments.config import make_config


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
    from lowcomm.experiments import execution, run_folder

    # The setting flags reach the config through ctx.params (see _flags).
    with _user_errors():
        run_folder.check_out(out)
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
