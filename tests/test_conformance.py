"""Every registered algorithm through the same checks (optax's common tests, sklearn's checks).

Convergence to a stated suboptimality on a toy problem, determinism, exact byte accounting
against the messages actually produced, checkpoint round trip, validated configs, partial
participation as declared, and a meta-test that every config field is read (changing it changes
the trajectory).
"""

import dataclasses
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from lowcomm.algorithms.registry import REGISTRY, build_algorithm
from lowcomm.algorithms.settings import participation_refusal
from lowcomm.core.errors import InvalidConfigError
from lowcomm.core.messages import Download, Upload
from lowcomm.engines.participation import check_declared
from lowcomm.engines.session import load_checkpoint
from lowcomm.problems.logistic import newton_optimum
from tests.conftest import Setup

# name -> (settings for the toy problem, rounds, allowed suboptimality F - F*)
CASES: dict[str, tuple[dict[str, Any], int, float]] = {
    "sgd": ({"lr": 0.5, "batch_size": 16, "momentum": 0.5}, 150, 2e-2),
    "local-sgd": ({"lr": 0.3, "batch_size": 16, "local_steps": 4}, 60, 2e-2),
    "gd": ({"step0": 4.0}, 100, 1e-6),
    # the lazy family adds the workers' shares of the total, sum_m f_m = M F: F's minimiser on
    # these unequal shards too (tests/test_objectives.py); the bounds are the stochastic noise's
    "sasg": ({"lr": 0.05, "density": 0.4, "window": 4}, 200, 2e-2),
    "lasg": ({"lr": 0.05, "window": 4}, 200, 2e-2),
    "lag": ({"lr": 0.1}, 100, 5e-3),
    "topk-ef": ({"lr": 0.05, "density": 0.4}, 200, 2e-2),
    # model averaging after local Newton steps stalls near (not at) the optimum on unequal shards
    "local-newton": ({"local_steps": 2}, 10, 5e-3),
    "giant": ({}, 30, 1e-10),
    # adds the 4 workers' updates (sum convention, like local SGD with 4x the step)
    "hogwild-ib": ({"sample_sizes": "linear:1,1", "step": "inv:0.1,500"}, 40, 2e-2),
    "async-msgd": ({"lr": 0.3, "momentum": 0.5, "batch_size": 16, "delay": "uniform:2"}, 150, 2e-2),
}
# option sets that change what is sent, through the same checks: label -> (name, case)
VARIANTS: dict[str, tuple[str, tuple[dict[str, Any], int, float]]] = {
    # minibatch units of 12: 4 steps per epoch, so the runs below send unit orders
    "sgd-cd-grab-minibatch": (
        "sgd",
        (
            {"order": "cd-grab", "unit": "minibatch", "lr": 0.5, "batch_size": 12, "momentum": 0.5},
            150,
            2e-2,
        ),
    ),
}
# every compressor on every algorithm that takes one (error feedback with the biased ones); the
# suboptimality allowed is the uncompressed case's times COMPRESSED_SLACK
COMPRESSORS = {
    "topk:0.4": True,
    "topk-global:0.4": True,
    "randk:0.6": False,
    "sign": True,
    "qsgd:4": False,
    "lowrank:1": True,
}
COMPRESSED_SLACK = 5.0
COMPRESSING = ("sgd", "local-sgd", "hogwild-ib", "async-msgd", "sasg", "lasg", "topk-ef")
VARIANTS |= {
    f"{name}[{spec}]": (
        name,
        (
            # the compressor replaces the lazy family's top-k density
            {k: v for k, v in CASES[name][0].items() if k != "density"}
            | {"compressor": spec, "error_feedback": feedback},
            CASES[name][1],
            COMPRESSED_SLACK * CASES[name][2],
        ),
    )
    for name in COMPRESSING
    for spec, feedback in COMPRESSORS.items()
}
LABELS = sorted([*CASES, *VARIANTS])


def case(label: str) -> tuple[str, tuple[dict[str, Any], int, float]]:
    """The registered name and the case of a label of CASES or VARIANTS."""
    return VARIANTS[label] if label in VARIANTS else (label, CASES[label])


# a changed value per field, to show the field is read (per algorithm where it differs)
SPECIFIC: dict[tuple[str, str], Any] = {
    ("local-sgd", "reduce"): "mean",
    ("sasg", "sampling"): "replacement",
    ("lasg", "sampling"): "replacement",
    ("topk-ef", "sampling"): "replacement",
    ("sasg", "lr"): 0.01,
    ("lasg", "lr"): 0.01,
    ("topk-ef", "lr"): 0.01,
    ("sasg", "window"): 3,
    ("lasg", "window"): 3,
    ("giant", "solver"): "exact",
    ("local-newton", "adaptive"): False,
    ("local-newton", "solver"): "exact",
    ("local-newton", "armijo"): 0.2,
    ("local-newton", "shrink"): 0.3,
    ("local-newton", "reduce"): "size-weighted",
    ("sasg", "error_feedback"): False,
    ("topk-ef", "error_feedback"): False,
}
# settings under which every field matters within a few rounds (gd must backtrack)
FIELD_BASE: dict[str, dict[str, Any]] = {
    "gd": {"step0": 64.0},
    "sasg": {"lr": 0.05, "window": 2, "threshold": 0.1, "density": 0.4},
    "lasg": {"lr": 0.05, "window": 2, "threshold": 0.1},
    "lag": {"lr": 0.1, "window": 1, "threshold": 0.01},
    "local-newton": {
        "local_steps": 3,
        "adaptive": True,
        "solver": "cg",
        "cg_iters": 3,
        "armijo": 0.49,
    },
}
PERTURBATIONS: dict[str, Any] = {
    "lr": 0.05,
    "batch_size": 3,
    "momentum": 0.9,
    "reduce": "sum",
    "asynchronous": True,
    "local_steps": 2,
    "step0": 0.25,
    "shrink": 0.9,
    "candidates": 2,
    "armijo": 0.45,
    "sampling": "reshuffle",
    "window": 2,
    "threshold": 5.0,
    "density": 0.2,
    "reference": "previous-iterate",
    "xi": (1e-4, 1e-4),
    "rule": "ps",
    "adaptive": True,
    "decrease": "halve",
    "rollback": True,
    "tolerance": 1.0,
    "relative_tolerance": 0.5,
    "solver": "cg",
    "cg_tol": 0.5,
    "cg_iters": 1,
    "line_search": "third-round",
    "order": "d-rr",
    "sample_sizes": "const:3",
    "step": "const:0.01",
    "mode": "minibatch",
    "step_timing": "gradient",
    "delay": "const:2",
    "normalize": True,
    "unit": "minibatch",
    "nesterov": True,
    "compressor": "topk:0.5",
    "error_feedback": True,
}
# fields read only under another field's setting: both runs of the check get these settings
ENABLED_BY: dict[tuple[str, str], dict[str, Any]] = {
    ("sgd", "unit"): {"order": "cd-grab"},
    # on the toy, CG to 1e-12 takes d steps and equals the exact solve; a cut CG does not
    ("giant", "solver"): {"cg_iters": 2},
    ("sgd", "nesterov"): {"momentum": 0.5},
    ("sgd", "error_feedback"): {"compressor": "topk:0.5"},
    ("local-sgd", "error_feedback"): {"compressor": "topk:0.5"},
    ("hogwild-ib", "error_feedback"): {"compressor": "topk:0.5"},
    ("async-msgd", "error_feedback"): {"compressor": "topk:0.5"},
    ("lasg", "error_feedback"): {"compressor": "topk:0.5"},
    ("sasg", "compressor"): {"density": 0.01},
    ("topk-ef", "compressor"): {"density": 0.01},
}
# fields whose effect needs a particular setting of another field, tested where it is named
COVERED_ELSEWHERE = {
    ("sgd", "projection"): "test_ordered_sgd.py::test_sign_bits_give_the_same_run_as_...",
    ("local-newton", "then_giant"): "test_newton.py::test_then_giant_switches_once_l_is_1_...",
}


def test_every_registered_algorithm_has_a_conformance_case() -> None:
    assert set(CASES) == set(REGISTRY)


@pytest.fixture(scope="module")
def toy() -> tuple[Setup, float]:
    setup = Setup()
    train = setup.evaluator
    _, f_star = newton_optimum(setup.problem, train.X_train, train.y_train)
    return setup, f_star


@pytest.mark.parametrize("label", LABELS)
def test_reaches_the_stated_suboptimality(label: str, toy: tuple[Setup, float]) -> None:
    setup, f_star = toy
    name, (settings, rounds, tolerance) = case(label)
    result = setup.run(build_algorithm(name, settings), rounds, eval_every=rounds)
    assert result.history["train_loss"].iloc[-1] - f_star < tolerance


@pytest.mark.parametrize("label", LABELS)
def test_ledger_bytes_equal_the_messages_produced(label: str, setup: Setup) -> None:
    """Bytes up = the uploads the aggregator received; bytes down = the downloads delivered."""
    name, (settings, _, _) = case(label)
    algorithm = build_algorithm(name, settings)
    uploads: list[Upload] = []
    downloads: list[tuple[Download, int]] = []
    aggregate, init = algorithm.aggregate, algorithm.init
    workers = len(setup.parts)

    def spy_aggregate(state: Any, up: Upload, ctx: Any) -> Any:
        uploads.append(up)
        state, down = aggregate(state, up, ctx)
        downloads.append((down, up.payload.rows))
        return state, down

    def spy_init(*args: Any) -> Any:
        state, down = init(*args)
        downloads.append((down, workers))
        return state, down

    algorithm.aggregate = spy_aggregate  # type: ignore[method-assign]
    algorithm.init = spy_init  # type: ignore[method-assign]
    result = setup.run(algorithm, 6)
    assert result.ledger.total("bytes_up") == sum(int(u.nbytes().sum()) for u in uploads)
    assert result.ledger.total("uploads") == sum(int(u.sent.sum()) for u in uploads)
    # a synchronous run ends before sending its last download; an asynchronous one has replied
    delivered = downloads if not algorithm.synchronous else downloads[:-1]
    sent_down = [int(d.for_workers(torch.arange(n)).nbytes().sum()) for d, n in delivered]
    assert result.ledger.total("bytes_down") == sum(sent_down)
    assert result.ledger.total("downloads") == sum(n for _, n in delivered)


@pytest.mark.parametrize("label", LABELS)
def test_same_seed_same_trajectory_and_checkpoint_round_trip(
    label: str, setup: Setup, tmp_path: Path
) -> None:
    name, (settings, _, _) = case(label)
    algorithm = build_algorithm(name, settings)
    straight = setup.run(algorithm, 8, seed=2)
    again = setup.run(algorithm, 8, seed=2)
    assert torch.equal(straight.model, again.model)
    setup.run(algorithm, 4, seed=2, checkpoint_every=4, checkpoint_dir=tmp_path)
    resumed = setup.resume(algorithm, 8, load_checkpoint(tmp_path), seed=2)
    assert torch.equal(straight.model, resumed.model)
    pd.testing.assert_frame_equal(
        straight.history.drop(columns="wall_time"), resumed.history.drop(columns="wall_time")
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_config_field_is_read(name: str, setup: Setup) -> None:
    """Changing any field changes the trajectory or its accounting (e.g. rounds counted)."""
    settings = FIELD_BASE.get(name, CASES[name][0])

    def outcome(values: dict[str, Any]) -> pd.DataFrame:
        return setup.run(build_algorithm(name, values), 12).history.drop(columns="wall_time")

    base = outcome(settings)
    for field in dataclasses.fields(REGISTRY[name][0]):
        if (name, field.name) in COVERED_ELSEWHERE:
            continue
        value = SPECIFIC.get((name, field.name), PERTURBATIONS[field.name])
        enabling = ENABLED_BY.get((name, field.name), {})
        before = outcome({**settings, **enabling}) if enabling else base
        changed = outcome({**settings, **enabling, field.name: value})
        assert not changed.equals(before), f"{name}: changing {field.name} changed nothing"


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        (
            "sgd",
            {"lr": 0},
            "The 'lr' parameter of sgd must be a finite number > 0, or const:ETA, inv:ETA0,T0, "
            "step:ETA0,GAMMA,EVERY or cosine:ETA0,K. Got 0.",
        ),
        (
            "sgd",
            {"momentum": 1.0},
            r"The 'momentum' parameter of sgd must be a number in \[0.0, 1.0\). Got 1.0.",
        ),
        (
            "local-sgd",
            {"local_steps": 0},
            "The 'local_steps' parameter of local-sgd must be an integer >= 1. Got 0.",
        ),
        (
            "gd",
            {"shrink": 1.5},
            r"The 'shrink' parameter of line search must be a number in \[1e-12, 1.0\). Got 1.5.",
        ),
        ("sgd", {"nope": 1}, "The 'nope' parameter of sgd must be a known setting"),
        (
            "adam",
            {},
            "The 'algorithm' parameter of lowcomm must be one of sgd, local-sgd, gd, sasg",
        ),
    ],
)
def test_invalid_settings_fail_at_construction(name: str, settings: dict, message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        build_algorithm(name, settings)


@pytest.mark.parametrize("name", sorted(CASES))
def test_partial_participation_is_taken_or_refused_as_declared(name: str, setup: Setup) -> None:
    """K = 2 of 4 workers a round: half the messages and bytes, or the declared refusal."""
    settings = CASES[name][0]
    reason = participation_refusal(REGISTRY[name].config(**settings))
    if reason is not None:
        with pytest.raises(InvalidConfigError, match=re.escape(f"left out for {name}: {reason}")):
            check_declared(name, REGISTRY[name].config(**settings), "per_round", 2)
        return
    algorithm = build_algorithm(name, settings)
    part, full = setup.run(algorithm, 6, per_round=2), setup.run(algorithm, 6)
    assert part.ledger.records().groupby("round")["uploads"].sum().tolist() == [2] * 6
    for counter in ("uploads", "downloads", "bytes_up", "bytes_down"):
        assert 2 * part.ledger.total(counter) == full.ledger.total(counter), counter
