"""Turn a :class:`RunConfig` into a run: data, partition, problem, algorithm, engine."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

import lowcomm
from lowcomm.algorithms.base import Algorithm
from lowcomm.algorithms.registry import build_algorithm, registered
from lowcomm.core.clock import ClockModel, ComputeModel, Link, NetworkModel
from lowcomm.core.device import run_device
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.rng import Streams
from lowcomm.data.dataset import Shards, TrainTest
from lowcomm.data.loaders import load_data
from lowcomm.data.partition import partition, partition_summary
from lowcomm.data.sparse import DENSE_LIMIT
from lowcomm.data.spec import parse_data_spec, parse_partition_spec
from lowcomm.engines import participation
from lowcomm.engines.evaluation import Evaluator
from lowcomm.engines.session import Events, RunOptions, RunResult, RunState
from lowcomm.engines.simulate import Simulation
from lowcomm.experiments import tracking
from lowcomm.experiments.config import RunConfig, trajectory_settings
from lowcomm.experiments.kept import Removed, cut_to_usable
from lowcomm.experiments.models import Objects, lenet_input, make_problem
from lowcomm.problems.base import Problem

UNBOUNDED = 10**12


@dataclass(frozen=True)
class Prepared:
    """Everything an engine needs, built deterministically from a config."""

    config: RunConfig
    data: TrainTest
    parts: list[np.ndarray]
    shards: Shards
    problem: Problem
    algorithm: Algorithm
    evaluator: Evaluator
    streams: Streams
    clock: ClockModel
    rounds: int
    removed: Removed

    def options(
        self,
        progress: bool = False,
        checkpoint_dir: Any = None,
        replay: Events | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> RunOptions:
        """The engine's run options (``replay``: the workers of each asynchronous update).

        ``stop``: asked before each round; yes ends the run there (None: never). The progress
        cadence and the row observer come from the current tracking context
        (:mod:`lowcomm.experiments.tracking`).
        """
        c, track = self.config, tracking.current()
        return RunOptions(
            rounds=self.rounds,
            eval_every=c.eval_every,
            checkpoint_every=c.checkpoint_every if checkpoint_dir is not None else 0,
            checkpoint_dir=checkpoint_dir,
            lag_cap=c.lag_cap,
            async_order=c.async_order,
            progress=progress,
            grad_budget=c.grad_budget,
            replay=replay,
            settings=trajectory_settings(c),
            stop=stop,
            timeout=c.timeout,
            per_round=participation.per_round(c.workers, c.participation, c.per_round),
            progress_every=track.progress_every,
            on_row=track.observer(),
        )


def _check_timing(config: RunConfig, algorithm: Algorithm) -> None:
    """Refuse timing settings the run would silently ignore or misread."""
    if config.lag_cap is not None and algorithm.synchronous:
        allowed = "left out for a synchronous algorithm (only asynchronous runs have lags)"
        raise InvalidConfigError("lag_cap", "the run config", allowed, config.lag_cap)
    if config.speeds and len(config.speeds) != config.workers:
        allowed = f"{config.workers} numbers, one per worker (or none)"
        raise InvalidConfigError("speeds", "the run config", allowed, list(config.speeds))


def check_participation(config: RunConfig) -> None:
    """Refuse a malformed sample of workers per round, or one the algorithm declines.

    All n workers (P = 1, K = n) is full participation, which every algorithm takes.
    """
    count = participation.per_round(config.workers, config.participation, config.per_round)
    if count is not None:
        option = "per_round" if config.participation is None else "participation"
        declared = registered(config.algorithm).config(**_algorithm_options(config))
        participation.check_declared(config.algorithm, declared, option, getattr(config, option))


def prepare(config: RunConfig, objects: Objects | None = None) -> Prepared:
    """Load, partition and build everything for ``config`` (deterministic in its seed).

    The training set is cut to the examples the algorithm can use of each shard
    (:mod:`lowcomm.experiments.kept`). The shards, the problem (its parameters) and the
    evaluator's data are put on the run's device (:func:`~lowcomm.core.device.run_device`).
    ``objects``: data, module and loss given as Python objects (:func:`lowcomm.run`).
    """
    device = run_device(config.device, config.engine)
    algorithm = build_algorithm(config.algorithm, _algorithm_options(config))
    _check_timing(config, algorithm)
    check_participation(config)
    partition_spec = parse_partition_spec(config.partition)
    data = _data(config, objects)
    _check_sparse(config.model, data)
    if config.model == "lenet":
        data = lenet_input(data)
    parts = partition(data.train.y, config.workers, partition_spec, config.seed)
    data, parts, removed = cut_to_usable(data, parts, algorithm, config.seed)
    problem = make_problem(config, data, objects, device)
    shards = Shards.build(data.train, parts, problem.dtype, device)
    network = NetworkModel(Link(config.latency, config.bandwidth))
    compute = ComputeModel(config.seconds_per_grad, 0.0, config.speeds)
    clock = ClockModel(network, compute, config.round_latency)
    evaluator = Evaluator.build(problem, data)
    rounds = _rounds(config, algorithm, shards)
    return Prepared(
        config,
        data,
        parts,
        shards,
        problem,
        algorithm,
        evaluator,
        Streams(config.seed),
        clock,
        rounds,
        removed,
    )


def _data(config: RunConfig, objects: Objects | None) -> TrainTest:
    """The data given as objects, else those named by ``config.data``."""
    if objects is not None and objects.data is not None:
        return objects.data.split(config.seed, config.test_fraction)
    return load_data(parse_data_spec(config.data), config.seed, config.test_fraction)


def _check_sparse(model: str, data: TrainTest) -> None:
    """Refuse sparse features (data too wide to densify) for a model other than a linear one."""
    train = data.train
    linear = model in ("logistic", "softmax") or (model == "auto" and train.n_classes >= 2)
    if sp.issparse(train.X) and not linear:
        n, d = train.n + data.test.n, train.X.shape[1]
        allowed = (
            f"logistic or softmax for sparse data ({train.name}: {n} x {d} features would take "
            f"{n * d * 8 / 2**30:.2f} GiB dense, over the {DENSE_LIMIT / 2**30:.2f} GiB limit "
            "for dense data)"
        )
        raise InvalidConfigError("model", "the run config", allowed, model)


def _algorithm_options(config: RunConfig) -> dict[str, Any]:
    """The algorithm's settings, with the run flags that are algorithm settings folded in."""
    shortcuts = {"order": config.order, "sample_sizes": config.sample_sizes}
    return {**config.options, **{k: v for k, v in shortcuts.items() if v is not None}}


def _rounds(config: RunConfig, algorithm: Algorithm, shards: Shards) -> int:
    """How many rounds the run may take.

    ``rounds``, or ``epochs`` times the algorithm's rounds per epoch; unbounded when a budget of
    gradient evaluations is given without an explicit ``rounds``.
    """
    if config.grad_budget is not None and "rounds" not in config.model_fields_set:
        return UNBOUNDED
    if config.epochs is None:
        return config.rounds
    per_epoch = getattr(algorithm, "rounds_per_epoch", None)
    if per_epoch is None:
        allowed = "used with an epoch-based algorithm (sgd with an --order)"
        raise InvalidConfigError("epochs", "the run config", allowed, config.epochs)
    rounds: int = config.epochs * per_epoch(shards.sizes)
    return rounds


def metadata(prepared: Prepared) -> dict[str, Any]:
    """Run metadata: full config, seed, versions, data and every worker's shard.

    ``data.n_train`` counts the training examples kept; ``data.removed`` lists the others.
    """
    config, data = prepared.config, prepared.data
    return {
        "config": config.model_dump(mode="json"),
        "seed": config.seed,
        "versions": {
            "lowcomm": lowcomm.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "data": {
            "name": data.train.name,
            "n_train": data.train.n,
            "n_test": data.test.n,
            "feature_shape": list(data.train.feature_shape),
            "n_classes": data.train.n_classes,
            "removed": prepared.removed.record(),
        },
        "problem": {"dim": prepared.problem.dim, "metric": prepared.problem.metric_name},
        "partition": partition_summary(data.train.y, prepared.parts, data.train.n_classes),
    }


def execute(
    prepared: Prepared,
    progress: bool = False,
    checkpoint_dir: Any = None,
    resume: RunState | None = None,
    replay: Events | None = None,
    stop: Callable[[], bool] | None = None,
) -> RunResult | None:
    """Run ``prepared`` on the configured engine; ``None`` on torchdist ranks other than 0.

    ``replay``: handle an asynchronous run's updates in this order of workers
    (:func:`lowcomm.engines.asynchrony.event_order` of a saved run's ledger). ``stop``: asked
    before each round, yes ends the run early (its result's ``stopped_at``).
    """
    options = prepared.options(progress, checkpoint_dir, replay, stop)
    parts = (
        prepared.algorithm,
        prepared.problem,
        prepared.shards,
        prepared.evaluator,
        prepared.streams,
        prepared.clock,
        options,
    )
    if prepared.config.engine == "torchdist":
        from lowcomm.engines.torchdist import TorchDist

        return TorchDist(*parts).run(resume)
    return Simulation(*parts).run(resume)
