"""The public Python API: :func:`run` and :func:`compare` (re-exported by ``lowcomm``).

Every keyword left at None takes its value from ``config`` (a :class:`RunConfig`, a mapping
or a TOML/YAML file) and otherwise the default of :class:`RunConfig` (docs/cli.md lists them).
Other :class:`RunConfig` fields (``epochs``, ``l2``, ``dtype``, ``device``, ``latency``, ...) are
keyword arguments too. The command line is a face over these two functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lowcomm.core.errors import InvalidConfigError
from lowcomm.data.inputs import Examples, supplied
from lowcomm.experiments.compare import Comparison
from lowcomm.experiments.compare import compare as compare_runs
from lowcomm.experiments.config import IN_MEMORY, RunConfig, make_config, read_config_file
from lowcomm.experiments.execution import Result, run_config
from lowcomm.experiments.models import Objects
from lowcomm.experiments.tracking import tracking
from lowcomm.experiments.variants import expand, flatten_options, resolve_options

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ConfigSource = RunConfig | Mapping[str, Any] | str | Path | None


def _base(config: ConfigSource) -> dict[str, Any]:
    """The settings of ``config`` as a dict."""
    if config is None:
        return {}
    if isinstance(config, RunConfig):
        return config.model_dump()
    if isinstance(config, str | Path):
        return read_config_file(Path(config))
    return dict(config)


def _objects(fields: dict[str, Any], model: Any, loss: Any, data: Any, test: Any) -> Objects | None:
    """Move Python objects out of ``fields`` (naming them ``in-memory`` there)."""
    objects: dict[str, Any] = {}
    if isinstance(model, nn.Module):
        fields["model"], objects["module"] = IN_MEMORY, model
    elif model is not None:
        fields["model"] = model
    if callable(loss):
        fields["loss"], objects["loss"] = IN_MEMORY, loss
    elif loss is not None:
        fields["loss"] = loss
    if data is not None and not isinstance(data, str):
        fields["data"], objects["data"] = IN_MEMORY, supplied(data, test)
    elif test is not None:
        allowed = "None unless data is given as arrays or a Dataset"
        raise InvalidConfigError("test", "lowcomm.run", allowed, type(test).__name__)
    elif data is not None:
        fields["data"] = data
    return Objects(**objects) if objects else None


def _settings(
    config: ConfigSource, given: dict[str, Any], settings: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``config`` overlaid with the given fields; ``settings`` over its algorithm options."""
    base = _base(config)
    values = {**base, **{key: value for key, value in given.items() if value is not None}}
    values["options"] = {**base.get("options", {}), **(settings or {})}
    return values


def run(
    algorithm: str | None = None,
    *,
    model: str | nn.Module | None = None,
    loss: str | LossFunction | None = None,
    data: str | Examples | None = None,
    test: Examples | None = None,
    workers: int | None = None,
    partition: str | None = None,
    rounds: int | None = None,
    settings: Mapping[str, Any] | None = None,
    seed: int | None = None,
    engine: str | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    replay: str | Path | None = None,
    progress: bool = False,
    config: ConfigSource = None,
    overwrite: bool = False,
    tensorboard: str | Path | None = None,
    progress_every: float = 10.0,
    **options: Any,
) -> Result | None:
    """Run one algorithm; return its history, final model and ledger.

    Args:
        algorithm: a registered name (``lowcomm algorithms`` lists them); default ``sgd``.
        model: an ``nn.Module`` (its parameters are trained as one flat vector; see
            docs/api.md for buffers), a built-in name (``auto``, ``logistic``, ``softmax``,
            ``mlp``, ``lenet``, ``lstm-lm``, ``pca``) or ``package.module:factory``; default
            ``auto``.
        loss: ``loss(outputs, y)`` of any reduction, or ``cross-entropy`` (default), ``mse``
            or ``package.module:function``; for module models.
        data: ``(X, y)`` NumPy arrays or tensors, a map-style ``torch.utils.data.Dataset`` of
            ``(x, y)`` items, or a data-set string (``digits``, ``libsvm:PATH``, ``csv:PATH``;
            docs/data.md); default ``digits``.
        test: the test set, like ``data``; None holds ``test_fraction`` of ``data`` out.
        workers: number of workers; default 8.
        partition: ``iid`` (default), ``sorted``, ``classes:K``, ``dirichlet:ALPHA``,
            ``dirichlet:ALPHA,min_size=M``, ``size-skew:POWER``, ``contiguous``.
        rounds: rounds (aggregator updates if asynchronous); default 100.
        settings: the algorithm's settings (``lowcomm algorithms NAME`` lists them).
        seed: seed of split, partition, initialisation and sampling; default 0.
        engine: ``simulate`` (default) or ``torchdist`` (every rank calls :func:`run`).
        out: a folder for history.csv, run.json, ...; None writes nothing. Locked while the
            run writes it; a folder that holds another run is refused (see ``overwrite``).
        resume: continue the run checkpointed in ``out`` (``checkpoint_every=N``).
        replay: an asynchronous run follows the update order of the run saved in this folder.
        progress: show progress on stderr: a bar on a terminal (or in Jupyter), otherwise a
            line (round, loss, ETA) every ``progress_every`` seconds, then one at the end.
        config: settings to start from (a RunConfig, a mapping or a TOML/YAML file).
        overwrite: replace the run saved in ``out`` (its files are removed before this one
            starts).
        tensorboard: a folder for TensorBoard event files: each history row's train_loss,
            test_metric, bytes_up, bytes_down, uploads and sim_time at step = round. Needs
            ``lowcomm[tensorboard]``.
        progress_every: seconds between progress lines (> 0).
        **options: any other :class:`RunConfig` field.

    Returns:
        The :class:`Result`; None on torchdist ranks other than 0.

    Raises:
        LowcommError: invalid settings or data, ``out`` locked by another run or holding one,
            ``tensorboard`` given without TensorBoard installed, before any work starts
            (nothing written).
        Interrupted: SIGINT or SIGTERM stopped the run after a round; what it had is saved in
            ``out``, ``run.json`` marked interrupted (a ``KeyboardInterrupt``).
    """
    given = dict(options, algorithm=algorithm, workers=workers, partition=partition)
    given.update(rounds=rounds, seed=seed, engine=engine)
    objects = _objects(given, model, loss, data, test)
    run_settings = make_config(_settings(config, given, settings))
    with tracking(tensorboard, progress_every=progress_every):
        return run_config(
            run_settings,
            objects,
            None if out is None else Path(out),
            resume,
            None if replay is None else Path(replay),
            progress,
            overwrite,
        )


def compare(
    algorithms: Sequence[str] = ("sgd", "local-sgd"),
    *,
    seeds: Sequence[int] = (0,),
    target_loss: float | None = None,
    settings: Mapping[str, Any] | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    model: str | nn.Module | None = None,
    loss: str | LossFunction | None = None,
    data: str | Examples | None = None,
    test: Examples | None = None,
    workers: int | None = None,
    partition: str | None = None,
    rounds: int | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    config: ConfigSource = None,
    overwrite: bool = False,
    tensorboard: str | Path | None = None,
    progress_every: float = 10.0,
    **options: Any,
) -> Comparison:
    """Run several algorithms on the same data, partition and seeds; summarise (and plot).

    Args:
        algorithms: registered names, or variants ``"NAME[KEY=VALUE,...]"`` (e.g.
            ``"sgd[lr=0.1]"``, labelled by their settings), in the order of the summary and the
            legends.
        seeds: one run per algorithm (or variant) and seed.
        target_loss: the training loss the summary's ``*_to_target`` columns refer to; None:
            the largest final mean loss (a loss every algorithm reaches).
        settings: ``{"lr": 0.1}`` for every algorithm that takes it,
            ``{"sgd": {"lr": 0.1}}`` or ``{"sgd.lr": 0.1}`` for one.
        grid: ``{"lr": [0.1, 0.01]}``: every algorithm that takes ``lr`` (and does not set it
            in brackets) runs once per value, labelled ``sgd[lr=0.1]``, ...; a variant's
            settings win over the grid, the grid over ``settings``.
        model: as for :func:`run`.
        loss: as for :func:`run`.
        data: as for :func:`run`; every run sees the same data.
        test: as for :func:`run`.
        workers: as for :func:`run`.
        partition: as for :func:`run`.
        rounds: as for :func:`run`.
        out: a folder for each run, summary.csv, compare.json and the plots; None writes
            nothing. Locked while the comparison writes it; a folder that holds a comparison
            (or any of its run folders a run) is refused (see ``overwrite``).
        progress: show progress per run on stderr, as for :func:`run`.
        config: as for :func:`run`.
        overwrite: replace the comparison saved in ``out`` (each run's files, the summary and
            the plots are removed before the new ones are written).
        tensorboard: as for :func:`run`, each run in the subfolder named as its run folder
            (``sgd/seed0``, ``sgd_lr=0.1/seed0``).
        progress_every: as for :func:`run`.
        **options: as for :func:`run`.

    Returns:
        The summary table and every run's :class:`Result`.
    """
    given = dict(options, workers=workers, partition=partition, rounds=rounds)
    objects = _objects(given, model, loss, data, test)
    base = make_config(_settings(config, given, None))
    names = expand(list(algorithms), grid or {})
    per_algorithm = resolve_options(flatten_options(settings or {}), names)
    folder = None if out is None else Path(out)
    with tracking(tensorboard, progress_every=progress_every):
        return compare_runs(
            base,
            names,
            per_algorithm,
            list(seeds),
            folder,
            target_loss,
            progress,
            objects,
            overwrite,
        )
